"""Serving export: only serving features in, privileged columns cannot change the output."""

import os

import numpy as np
import pytest
import tensorflow as tf

import models
from models import testing


@pytest.fixture(scope="module")
def schema():
  return testing.tiny_schema()


@pytest.fixture(scope="module")
def arrays(schema):
  return testing.synthetic_log_arrays(schema, 48, seed=3)


def _scrambled(schema, arrays, stage):
  """The same rows with every privileged column replaced by different values."""
  rng = np.random.default_rng(7)
  out = dict(arrays)
  for name in testing.privileged_columns(schema, stage):
    out[name] = rng.permutation(arrays[name]) + np.asarray(3, arrays[name].dtype)
  return out


def _trained(schema, stage, architecture, label):
  tf.keras.utils.set_random_seed(0)
  spec = models.DistillationSpec(teacher_kind="pfd", architecture=architecture, label=label,
                                 widths=(16, 8), embedding_dim=4)
  model = models.build_distillation(schema, stage, spec)
  model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
  data = testing.synthetic_log_arrays(schema, 256, seed=4)
  model.fit(models.make_dataset(data, 128, schema=schema), verbose=0)
  return model


def _export(schema, tmp_path_factory, stage, architecture, label):
  model = _trained(schema, stage, architecture, label)
  path = models.export_serving(model, stage, schema, str(tmp_path_factory.mktemp(stage) / "m"))
  return stage, model, models.load_serving(path)


@pytest.fixture(scope="module")
def coarse_export(schema, tmp_path_factory):
  return _export(schema, tmp_path_factory, "coarse", "two_tower", "click")


@pytest.fixture(scope="module")
def cvr_export(schema, tmp_path_factory):
  return _export(schema, tmp_path_factory, "fine_cvr", "dnn", "conversion")


@pytest.fixture(params=["coarse_export", "cvr_export"])
def exported(request):
  return request.getfixturevalue(request.param)


def test_export_accepts_requests_without_privileged_columns(schema, arrays, exported):
  stage, model, served = exported
  privileged = set(testing.privileged_columns(schema, stage))
  assert not privileged & set(served.input_names)
  serving_only = {k: v for k, v in arrays.items() if k not in privileged}
  scores = served(serving_only).numpy()
  assert scores.shape == (len(arrays["item_id"]),)
  np.testing.assert_allclose(scores, tf.sigmoid(model(testing.as_batch(arrays))).numpy(),
                             rtol=1e-5, atol=1e-6)
  signature = served._loaded.signatures["serving_default"]
  assert set(signature.structured_input_signature[1]) == set(served.input_names)


def test_privileged_columns_leave_student_output_bitwise_unchanged(schema, arrays, exported):
  stage, model, served = exported
  scrambled = _scrambled(schema, arrays, stage)
  in_memory = model(testing.as_batch(arrays)).numpy()
  np.testing.assert_array_equal(in_memory, model(testing.as_batch(scrambled)).numpy())
  np.testing.assert_array_equal(served.logits(arrays).numpy(), served.logits(scrambled).numpy())
  teacher = model.teacher_logits(testing.as_batch(arrays)).numpy()
  assert np.any(teacher != model.teacher_logits(testing.as_batch(scrambled)).numpy())


def test_two_tower_export_serves_vectors_that_reproduce_the_logits(arrays, coarse_export):
  _, model, served = coarse_export
  users, items = served.user_vectors(arrays).numpy(), served.item_vectors(arrays).numpy()
  np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(model.student.scale * (users * items).sum(1),
                             served.logits(arrays).numpy(), rtol=1e-4, atol=1e-5)


def test_export_refuses_a_model_reading_privileged_features(schema, tmp_path):
  teacher = models.build_teacher("pfd", schema, "coarse", student_widths=(8,), embedding_dim=4)
  with pytest.raises(ValueError, match="cross_clicks_cate_24h"):
    models.export_serving(teacher, "coarse", schema, str(tmp_path / "teacher"))
  assert not os.path.exists(tmp_path / "teacher")
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_served_model_is_a_frozen_teacher(schema, arrays, cvr_export):
  stage, _, served = cvr_export
  tf.keras.utils.set_random_seed(0)
  spec = models.DistillationSpec(teacher_kind="pfd", label="conversion", mode="pretrained",
                                 widths=(8,), embedding_dim=4)
  model = models.build_distillation(schema, stage, spec, pretrained_teacher=served.logits)
  model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
  logs = model.fit(models.make_dataset(arrays, 16, schema=schema), verbose=0).history
  assert np.isfinite(logs["loss"]).all() and "teacher_auc" in logs
  assert not model.teacher.trainable_variables


def test_missing_request_column_is_named(arrays, exported):
  _, _, served = exported
  with pytest.raises(models.MissingFeatureError, match="item_price"):
    served({k: v for k, v in arrays.items() if k != "item_price"})


def _grouped(schema, arrays, m):
  """Rows regrouped as n requests of m candidates: per-request features [n] (sequences
  [n, L]), the rest [n, m]; and the flat rows that grouping stands for."""
  per_request = {f.name for f in schema.features if f.entity in ("user", "context")}
  n = len(arrays["item_id"]) // m
  grouped, flat = {}, {}
  for name, values in arrays.items():
    values = np.asarray(values)[:n * m]
    if name in per_request:
      grouped[name] = values[::m]
      flat[name] = np.repeat(grouped[name], m, axis=0)
    else:
      grouped[name] = values.reshape((n, m) + values.shape[1:])
      flat[name] = values
  return grouped, flat


@pytest.mark.parametrize("pooling,log1p", [("mean", False), ("attention", True)])
def test_candidate_logits_equal_the_logits_of_the_flattened_rows(schema, arrays, pooling, log1p):
  tf.keras.utils.set_random_seed(1)
  ranker = models.DNNRanker(schema.features_for("fine_ctr", "student"),
                            models.EmbeddingBank(4), widths=(8, 4), sequence_pooling=pooling,
                            numeric_log1p=log1p)
  grouped, flat = _grouped(schema, arrays, m=8)
  flat_logits = ranker(testing.as_batch(flat)).numpy().reshape(-1, 8)
  np.testing.assert_allclose(ranker.candidate_logits(testing.as_batch(grouped)).numpy(),
                             flat_logits, rtol=1e-5, atol=1e-6)


def test_candidates_signature_scores_like_flat_rows_and_ignores_privileged_columns(
    schema, arrays, cvr_export):
  stage, _, served = cvr_export
  grouped, flat = _grouped(schema, arrays, m=6)
  scores = served.predict_candidates(grouped)
  assert scores.shape == (8, 6)
  np.testing.assert_allclose(scores, served(flat).numpy().reshape(8, 6), rtol=1e-5, atol=1e-6)
  scrambled, _ = _grouped(schema, _scrambled(schema, arrays, stage), m=6)
  np.testing.assert_array_equal(served.predict_candidates(scrambled), scores)
  np.testing.assert_allclose(served.predict_candidates(grouped, max_rows=12), scores, rtol=1e-6)
  signature = served._loaded.signatures["candidates"]
  assert set(signature.structured_input_signature[1]) == set(served.input_names)
