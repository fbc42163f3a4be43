"""Schema-driven embeddings: id mapping, bucketing, pooling over valid entries (equal to the old
padded pooling), table sharing, missing features."""

import numpy as np
import pytest
import tensorflow as tf

from data.world import schema as schema_lib
import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from models import inputs
from models import rankers
from models import testing


@pytest.fixture(scope="module")
def schema():
  return testing.tiny_schema()


def test_out_of_vocabulary_ids_map_to_the_extra_row(schema):
  feature = schema["item_id"]
  ids = tf.constant([0, 5, feature.vocab_size, feature.vocab_size + 7, -3], tf.int64)
  rows = inputs.lookup_ids(feature, ids).numpy()
  assert rows.tolist() == [0, 5] + [feature.vocab_size] * 3


def test_numeric_values_are_bucketised_at_schema_boundaries(schema):
  feature = schema["cross_clicks_cate_24h"]  # buckets 1, 2, 3, 5, 8, ...
  rows = inputs.lookup_ids(feature, tf.constant([0.0, 1.0, 4.0, 1e6])).numpy()
  assert rows.tolist() == [0, 1, 3, len(feature.buckets)]


def test_sequence_and_candidate_share_one_table(schema):
  bank = inputs.EmbeddingBank(4, name="bank")
  bank.ensure([schema["hist_item_ids"], schema["item_id"]])
  assert bank.table("hist_item_ids") is bank.table("item_id")
  assert bank.groups == ["item_id"]
  assert bank.table("item_id").shape == (schema["item_id"].vocab_size + 1, 4)


def test_valid_entries_are_the_non_padding_positions_in_row_order():
  ids = tf.constant([[4, 9, -1], [-1, -1, -1], [-1, 7, 3]], tf.int64)
  rows, values = inputs.valid_entries(ids)
  assert rows.numpy().tolist() == [0, 0, 2, 2]
  assert values.numpy().tolist() == [4, 9, 7, 3]


def test_segment_mean_averages_each_row_and_empty_rows_are_zero():
  entries = tf.constant([[1.0], [3.0], [7.0]])
  pooled = inputs.segment_mean(entries, tf.constant([0, 0, 2], tf.int64), 3)
  assert pooled.numpy().ravel().tolist() == [2.0, 0.0, 7.0]


def test_segment_attention_weights_entries_of_the_row_only():
  entries = tf.constant([[1.0, 0.0], [0.0, 1.0], [50.0, 50.0]])
  query = tf.constant([[10.0, 0.0], [1.0, 1.0], [3.0, 3.0]])
  pooled = inputs.segment_attention(entries, tf.constant([0, 0, 2], tf.int64), query).numpy()
  assert pooled[0, 0] > 0.99 and pooled[0, 1] < 0.01
  assert pooled[1].tolist() == [0.0, 0.0]
  np.testing.assert_allclose(pooled[2], [50.0, 50.0], rtol=1e-6)


def _padded_pool(layer, feature, ids, single):
  """The pooling as it was before: embed all L slots, padding included, then mask."""
  ids = tf.cast(ids, tf.int64)
  mask = tf.not_equal(ids, schema_lib.PAD_ID)
  sequence = layer.embed(feature, ids)
  weights = tf.cast(mask, sequence.dtype)[..., None]
  if layer.sequence_pooling == "mean":
    total = tf.reduce_sum(sequence * weights, axis=1)
    return tf.math.divide_no_nan(total, tf.reduce_sum(weights, axis=1))
  query = single[inputs.VOCABULARY_GROUPS[feature.name]]
  scores = tf.einsum("bld,bd->bl", sequence, query) * tf.math.rsqrt(
      tf.cast(tf.shape(query)[-1], sequence.dtype))
  scores = tf.where(mask, scores, tf.fill(tf.shape(scores), tf.constant(-1e9, scores.dtype)))
  attention = tf.nn.softmax(scores, axis=-1) * tf.cast(mask, scores.dtype)
  return tf.einsum("bl,bld->bd", attention, sequence)


def _batch_with_empty_histories(schema, n_rows, empty_rows):
  arrays = testing.synthetic_log_arrays(schema, n_rows, seed=3)
  for name in inputs.VOCABULARY_GROUPS:
    arrays[name][empty_rows] = schema_lib.PAD_ID
  return testing.as_batch(arrays)


def _logits_and_table_gradients(ranker, batch):
  with tf.GradientTape() as tape:
    logits = ranker(batch, training=False)
    total = tf.reduce_sum(logits)
  grads = tape.gradient(total, ranker.embedding.bank.trainable_weights)
  return logits.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]


@pytest.mark.parametrize("pooling", ["mean", "attention"])
@pytest.mark.parametrize("empty_rows", [[0, 5, 6], slice(None)])
def test_valid_entry_pooling_equals_padded_pooling_on_the_same_weights(
    schema, monkeypatch, pooling, empty_rows):
  tf.keras.utils.set_random_seed(0)
  features = schema.features_for("fine_ctr", schema_lib.STUDENT)
  ranker = rankers.DNNRanker(features, inputs.EmbeddingBank(8), widths=(16, 8),
                             sequence_pooling=pooling)
  batch = _batch_with_empty_histories(schema, 48, empty_rows)
  logits, grads = _logits_and_table_gradients(ranker, batch)
  monkeypatch.setattr(inputs.FeatureEmbedding, "_pool", _padded_pool)
  padded_logits, padded_grads = _logits_and_table_gradients(ranker, batch)
  np.testing.assert_allclose(logits, padded_logits, rtol=1e-5, atol=1e-6)
  for grad, padded_grad in zip(grads, padded_grads):
    np.testing.assert_allclose(grad, padded_grad, rtol=1e-4, atol=1e-6)


def test_sequence_gradient_touches_only_valid_entries(schema):
  feature = schema["hist_item_ids"]
  layer = inputs.FeatureEmbedding([feature], inputs.EmbeddingBank(4))
  ids = tf.constant([[3, 4, -1, -1], [-1, -1, -1, -1], [5, -1, -1, -1]], tf.int64)
  with tf.GradientTape() as tape:
    total = tf.reduce_sum(layer({feature.name: ids}))
  grad = tape.gradient(total, layer.table(feature))
  assert isinstance(grad, tf.IndexedSlices)
  assert sorted(grad.indices.numpy().tolist()) == [3, 4, 5]


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_feature_embedding_width_and_finite_values(schema, pooling):
  arrays = testing.synthetic_log_arrays(schema, 16)
  features = schema.features_for("coarse", schema_lib.STUDENT)
  layer = inputs.FeatureEmbedding(features, inputs.EmbeddingBank(4), sequence_pooling=pooling)
  out = layer(testing.as_batch(arrays)).numpy()
  assert out.shape == (16, 4 * len(features))
  assert np.isfinite(out).all()


def test_missing_feature_error_names_the_feature(schema):
  arrays = testing.synthetic_log_arrays(schema, 8)
  del arrays["item_price"]
  layer = inputs.FeatureEmbedding(schema.features_for("coarse", schema_lib.STUDENT),
                                  inputs.EmbeddingBank(4))
  with pytest.raises(inputs.MissingFeatureError, match="item_price"):
    layer(testing.as_batch(arrays))


def test_attention_pooling_requires_the_candidate_feature(schema):
  with pytest.raises(ValueError, match="item_id"):
    inputs.FeatureEmbedding([schema["hist_item_ids"]], inputs.EmbeddingBank(4),
                            sequence_pooling="attention")
