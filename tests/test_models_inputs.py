"""Schema-driven embeddings: id mapping, bucketing, pooling, table sharing, missing features."""

import numpy as np
import pytest

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from data import schema as schema_lib
from models import inputs
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


def test_mean_pooling_ignores_padding_and_empty_history_is_zero():
  sequence = tf.constant([[[1.0], [3.0], [100.0]], [[7.0], [7.0], [7.0]]])
  mask = tf.constant([[True, True, False], [False, False, False]])
  assert inputs.masked_mean(sequence, mask).numpy().ravel().tolist() == [2.0, 0.0]


def test_target_attention_gives_padding_no_weight():
  sequence = tf.constant([[[1.0, 0.0], [0.0, 1.0], [50.0, 50.0]]])
  mask = tf.constant([[True, True, False]])
  pooled = inputs.target_attention(sequence, mask, tf.constant([[10.0, 0.0]])).numpy()
  assert pooled[0, 0] > 0.99 and pooled[0, 1] < 0.01


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
