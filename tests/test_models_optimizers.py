"""Row-wise Adam: Keras's Adam where a batch touches every row, untouched rows left alone."""

import numpy as np
import pytest
import tensorflow as tf

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from models import optimizers
from models import testing

STEPS = [([0, 2, 2, 4, 1, 3], 1.0), ([4, 4, 3, 2, 1, 0], -0.5), ([1, 0, 2, 3, 4, 4], 2.0)]


def _sparse_gradient(indices, scale, rows=5, dim=3):
  values = scale * tf.reshape(tf.range(len(indices) * dim, dtype=tf.float32), [-1, dim]) / 7.0
  return tf.IndexedSlices(values, tf.constant(indices, tf.int64), tf.constant([rows, dim]))


def _table(rows=5, dim=3):
  return tf.Variable(tf.reshape(tf.range(rows * dim, dtype=tf.float32), [rows, dim]) / 10.0)


def test_rowwise_adam_equals_keras_adam_when_every_row_is_touched():
  lazy_table, dense_table = _table(), _table()
  lazy, dense = optimizers.RowwiseAdam(0.01), tf.keras.optimizers.Adam(0.01)
  for indices, scale in STEPS:  # Every step touches all 5 rows, some twice.
    gradient = _sparse_gradient(indices, scale)
    lazy.apply_gradients([(gradient, lazy_table)])
    dense.apply_gradients([(tf.convert_to_tensor(gradient), dense_table)])
  np.testing.assert_allclose(lazy_table.numpy(), dense_table.numpy(), rtol=1e-6, atol=1e-7)


def test_rowwise_adam_leaves_untouched_rows_and_their_moments_alone():
  table = _table()
  before = table.numpy()
  optimizer = optimizers.RowwiseAdam(0.01)
  optimizer.apply_gradients([(_sparse_gradient([0, 0, 3], 1.0), table)])
  optimizer.apply_gradients([(_sparse_gradient([3], -1.0), table)])
  after = table.numpy()
  np.testing.assert_array_equal(after[[1, 2, 4]], before[[1, 2, 4]])
  assert (after[[0, 3]] != before[[0, 3]]).all()
  m = optimizer._momentums[0].numpy()
  assert (m[[1, 2, 4]] == 0).all() and (m[[0, 3]] != 0).all()


def test_rowwise_adam_updates_dense_weights_like_keras_adam():
  lazy_weights, dense_weights = _table(), _table()
  lazy, dense = optimizers.RowwiseAdam(0.01), tf.keras.optimizers.Adam(0.01)
  for _, scale in STEPS:
    gradient = scale * tf.ones([5, 3]) + lazy_weights  # Same values: the weights stay equal.
    lazy.apply_gradients([(gradient, lazy_weights)])
    dense.apply_gradients([(gradient, dense_weights)])
  np.testing.assert_array_equal(lazy_weights.numpy(), dense_weights.numpy())


def test_make_optimizer_names_and_refuses_unknown_ones():
  assert isinstance(optimizers.make_optimizer("adam", 0.1), optimizers.RowwiseAdam)
  plain = optimizers.make_optimizer("adam", 0.1, rowwise_tables=False)
  assert type(plain) is tf.keras.optimizers.Adam
  assert isinstance(optimizers.make_optimizer("adagrad", 0.1), tf.keras.optimizers.Adagrad)
  with pytest.raises(ValueError, match="sgd"):
    optimizers.make_optimizer("sgd", 0.1)


def test_rowwise_adam_trains_a_stage_model_with_keras_fit():
  schema = testing.tiny_schema()
  arrays = testing.synthetic_log_arrays(schema, 512, seed=1)
  tf.keras.utils.set_random_seed(0)
  spec = models.DistillationSpec(teacher_kind="pfd", architecture="dnn", label="conversion",
                                 widths=(16, 8), embedding_dim=4, unshared=("user_id",))
  model = models.build_distillation(schema, "fine_cvr", spec)
  model.compile(optimizer=optimizers.make_optimizer("adam", 0.01))
  table = model.student.embedding.table(schema["item_id"])
  before = table.numpy()
  logs = model.fit(models.make_dataset(arrays, 128, schema=schema), verbose=0).history
  assert np.isfinite(logs["loss"]).all()
  seen = np.unique(np.concatenate([arrays["item_id"], arrays["hist_item_ids"].ravel()]))
  unseen = np.setdiff1d(np.arange(table.shape[0]), seen)
  assert len(unseen) > 0
  np.testing.assert_array_equal(table.numpy()[unseen], before[unseen])
