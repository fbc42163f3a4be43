"""The linear reference: a logistic regression that learns, and scores candidates like a row."""

import numpy as np
import tensorflow as tf

from data.stats import metrics
import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
from models import distillation
from models import linear
from models import pipeline
from models import testing


def _student(schema):
  return linear.LinearRanker(distillation.student_features(schema, "fine_ctr"), name="lr")


def test_candidate_logits_equal_row_logits():
  schema = testing.tiny_schema()
  rows = testing.synthetic_log_arrays(schema, 12, seed=0)
  student = _student(schema)
  student(testing.as_batch(rows))  # builds the weights
  for variable in student.trainable_variables:  # non-trivial weights
    variable.assign(tf.random.stateless_normal(variable.shape, seed=[1, 2]))
  n, m = 3, 4
  batch = {}
  for f in student.input_features:
    value = rows[f.name]
    if f in student.per_request_features:
      batch[f.name] = tf.constant(value.reshape((n, m) + value.shape[1:])[:, 0])
    else:
      batch[f.name] = tf.constant(value.reshape((n, m) + value.shape[1:]))
  # Requests share their per-request features in this check.
  for f in student.per_request_features:
    rows[f.name] = np.repeat(batch[f.name].numpy(), m, axis=0)
  flat = student(testing.as_batch(rows)).numpy()
  np.testing.assert_allclose(student.candidate_logits(batch).numpy().reshape(-1), flat,
                             rtol=1e-5, atol=1e-5)


def test_logistic_regression_learns_the_planted_signal():
  tf.keras.utils.set_random_seed(0)
  schema = testing.tiny_schema()
  train = testing.synthetic_log_arrays(schema, 8000, seed=0)
  held_out = testing.synthetic_log_arrays(schema, 4000, seed=1)
  model = distillation.DistillationModel(_student(schema), None, label="click")
  model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
  model.fit(pipeline.make_dataset(train, 256, schema=schema, seed=0), epochs=2, verbose=0)
  logits = pipeline.predict(lambda b: model.student(b, training=False), held_out)
  assert metrics.auc(held_out["click"], logits) > 0.6
