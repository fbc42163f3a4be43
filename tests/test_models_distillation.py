"""The PFD objective: stop-gradient, λ schedule, sharing, unlabelled rows, modes and refusals."""

import numpy as np
import pytest
import tensorflow as tf

import models
from models import testing

WIDTHS = (16, 8)


@pytest.fixture(scope="module")
def schema():
  return testing.tiny_schema()


@pytest.fixture(scope="module")
def batch(schema):
  arrays = testing.synthetic_log_arrays(schema, 64, seed=1, unlabelled_fraction=0.25)
  return testing.as_batch(arrays)


def _model(schema, stage="fine_cvr", pretrained_teacher=None, **settings):
  tf.keras.utils.set_random_seed(0)
  settings.setdefault("widths", WIDTHS)
  settings.setdefault("embedding_dim", 4)
  if "unshared" in settings:
    settings["unshared"] = tuple(settings["unshared"])
  spec = models.DistillationSpec(**settings)
  return models.build_distillation(schema, stage, spec, pretrained_teacher=pretrained_teacher)


def _exclusive(variables, others):
  refs = {v.ref() for v in others}
  return [v for v in variables if v.ref() not in refs]


def _grads(tape, loss, variables):
  return [None if g is None else tf.convert_to_tensor(g)
          for g in tape.gradient(loss, variables, unconnected_gradients="none")]


def _terms(model, batch, tape_vars=None):
  with tf.GradientTape(persistent=True) as tape:
    student, teacher = model.heads_logits(batch, training=True)
    terms = model.task.components(batch[model.label], student, teacher)
    total = model.task(batch[model.label], student, teacher, step=model.step,
                       compute_metrics=False)
  return tape, terms, total


def test_teacher_untouched_by_distillation_loss(schema, batch):
  model = _model(schema, teacher_kind="pfd", label="conversion", unshared=["user_id"])
  tape, terms, total = _terms(model, batch)
  teacher_only = _exclusive(model.teacher.trainable_variables, model.student.trainable_variables)
  assert teacher_only, "the teacher must have weights of its own"
  assert any("user_id" in v.name for v in teacher_only)
  for grad in _grads(tape, terms["distill"], teacher_only):
    assert grad is None or not np.any(grad.numpy())
  for g_total, g_teacher in zip(_grads(tape, total, teacher_only),
                                _grads(tape, terms["teacher"], teacher_only)):
    np.testing.assert_array_equal(g_total.numpy(), g_teacher.numpy())


def test_teacher_update_equals_update_from_teacher_loss_alone(schema, batch):
  model = _model(schema, teacher_kind="pfd", label="click", share_embeddings=False)
  model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
  model.train_step(batch)  # Builds the optimizer state and BN statistics once.
  teacher_vars = model.teacher.trainable_variables
  tape, terms, _ = _terms(model, batch)
  expected = [v.numpy() - 0.1 * g.numpy()
              for v, g in zip(teacher_vars, _grads(tape, terms["teacher"], teacher_vars))]
  model.train_step(batch)
  for v, e in zip(teacher_vars, expected):
    np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)


def test_student_follows_student_loss_before_swap_step_then_mixture(schema, batch):
  model = _model(schema, teacher_kind="pfd", label="click", share_embeddings=False,
                 distill_weight=0.3, swap_step=5)
  student_vars = model.student.trainable_variables
  for step, lam in [(0, 0.0), (4, 0.0), (5, 0.3), (50, 0.3)]:
    model.step.assign(step)
    tape, terms, total = _terms(model, batch)
    g_student = _grads(tape, terms["student"], student_vars)
    g_distill = _grads(tape, terms["distill"], student_vars)
    for g, gs, gd in zip(_grads(tape, total, student_vars), g_student, g_distill):
      expected = (1 - lam) * gs.numpy() + lam * gd.numpy()
      np.testing.assert_allclose(g.numpy(), expected, rtol=1e-5, atol=1e-7)
    if lam == 0.0:
      for g, e in zip(_grads(tape, total, student_vars),
                      _grads(tape, terms["student"], student_vars)):
        np.testing.assert_array_equal(g.numpy(), e.numpy())


def test_step_counter_advances_once_per_train_step(schema, batch):
  model = _model(schema, teacher_kind="pfd", label="click", swap_step=2)
  model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
  data = tf.data.Dataset.from_tensors(batch).repeat(3)
  logs = model.fit(data, verbose=0).history
  assert int(model.step.numpy()) == 3
  assert logs["distill_lambda"][-1] == pytest.approx(0.5 / 3)  # λ = 0, 0, 0.5 over 3 steps


def test_shared_embedding_is_one_variable_and_user_id_can_be_unshared(schema):
  model = _model(schema, teacher_kind="pfd", label="conversion", unshared=["user_id"])
  student, teacher = model.student.embedding, model.teacher.embedding
  for name in ["item_id", "hist_item_ids", "item_category", "user_age_bucket"]:
    assert student.table(schema[name]) is teacher.table(schema[name])
  assert student.table(schema["user_id"]).ref() != teacher.table(schema["user_id"]).ref()
  refs = [v.ref() for v in model.trainable_variables]
  assert len(refs) == len(set(refs))
  assert student.table(schema["item_id"]).ref() in refs


def test_shared_embedding_receives_gradients_from_both_heads(schema, batch):
  model = _model(schema, teacher_kind="pfd", label="click", stage="coarse",
                 architecture="two_tower")
  table = model.student.item_embedding.table(schema["item_id"])
  assert table is model.teacher.item_embedding.table(schema["item_id"])
  tape, terms, _ = _terms(model, batch)
  for term in ("student", "teacher"):
    assert np.any(_grads(tape, terms[term], [table])[0].numpy())


def test_shared_lookup_cache_changes_no_logit(schema, batch):
  model = _model(schema, teacher_kind="pfd", label="click", stage="coarse",
                 architecture="two_tower", unshared=["user_id"])
  cache = {}
  student = model.student(batch, cache=cache).numpy()
  teacher = model.teacher(batch, cache=cache).numpy()
  np.testing.assert_array_equal(student, model.student(batch).numpy())
  np.testing.assert_array_equal(teacher, model.teacher(batch).numpy())
  cached_tables = {key[0] for key in cache}
  assert id(model.student.user_embedding.table(schema["item_id"])) in cached_tables
  assert len([k for k in cache if k[1] == "user_id"]) == 2  # unshared: one lookup per head


def test_separate_embeddings_have_distinct_variables(schema):
  model = _model(schema, teacher_kind="pfd", label="conversion", share_embeddings=False)
  student, teacher = model.student.embedding, model.teacher.embedding
  assert student.table(schema["item_id"]).ref() != teacher.table(schema["item_id"]).ref()


def test_unlabelled_rows_only_enter_distillation_loss():
  task = models.PrivilegedDistillation(0.5, 0)
  labels = tf.constant([1.0, 0.0, -1.0, -1.0])
  student = tf.constant([0.5, -0.2, 3.0, -4.0])
  teacher = tf.constant([1.0, -1.0, 2.0, 0.0])
  terms = task.components(labels, student, teacher)
  bce = lambda y, f: tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=f).numpy()
  np.testing.assert_allclose(terms["student"], bce(labels[:2], student[:2]).mean(), rtol=1e-6)
  np.testing.assert_allclose(terms["teacher"], bce(labels[:2], teacher[:2]).mean(), rtol=1e-6)
  np.testing.assert_allclose(terms["distill"], bce(tf.sigmoid(teacher), student).mean(),
                             rtol=1e-6)
  unlabelled = task.components(tf.fill([4], -1.0), student, teacher)
  assert float(unlabelled["student"]) == 0.0 and float(unlabelled["teacher"]) == 0.0


def test_baseline_loss_is_student_loss(schema, batch):
  model = _model(schema, teacher_kind="baseline", label="click")
  assert model.teacher is None
  _, terms, total = _terms(model, batch)
  assert float(total) == float(terms["student"])


def test_pretrained_teacher_stays_frozen_and_adds_no_teacher_loss(schema, batch):
  tf.keras.utils.set_random_seed(0)
  teacher = models.build_teacher("pfd", schema, "coarse", student_widths=WIDTHS, embedding_dim=4)
  teacher(batch)
  before = {v.name: v.numpy().copy() for v in teacher.weights}
  model = _model(schema, teacher_kind="pfd_md", stage="coarse", mode="pretrained",
                 pretrained_teacher=teacher)
  assert not any(v.ref() in {w.ref() for w in teacher.weights} for v in model.trainable_variables)
  model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
  model.fit(tf.data.Dataset.from_tensors(batch).repeat(2), verbose=0)
  assert len(before) == len(teacher.weights)
  for v in teacher.weights:
    np.testing.assert_array_equal(before[v.name], v.numpy())
  _, terms, total = _terms(model, batch)
  expected = 0.5 * terms["student"] + 0.5 * terms["distill"]
  np.testing.assert_allclose(float(total), float(expected), rtol=1e-6)


@pytest.mark.parametrize("kwargs, name", [
    (dict(distill_weight=1.5), "distill_weight"), (dict(distill_weight=-0.1), "distill_weight"),
    (dict(swap_step=-1), "swap_step")])
def test_out_of_range_lambda_or_swap_step_is_refused(schema, kwargs, name):
  with pytest.raises(ValueError, match=name):
    models.PrivilegedDistillation(**kwargs)
  with pytest.raises(ValueError, match=name):
    _model(schema, teacher_kind="pfd", **kwargs)


def test_student_asking_for_privileged_feature_is_refused(schema):
  with pytest.raises(ValueError, match="cross_clicks_cate_24h"):
    models.build_student(schema, "coarse", features=["user_id", "cross_clicks_cate_24h"])
  with pytest.raises(ValueError, match="dwell_seconds"):
    models.build_student(schema, "fine_cvr", features=["item_id", "dwell_seconds"])


def test_batch_missing_a_feature_fails_with_its_name(schema, batch):
  model = _model(schema, teacher_kind="pfd", label="conversion")
  incomplete = {k: v for k, v in batch.items() if k != "dwell_seconds"}
  with pytest.raises(models.MissingFeatureError, match="dwell_seconds"):
    model.compute_loss(incomplete)
  no_label = {k: v for k, v in batch.items() if k != "conversion"}
  with pytest.raises(models.MissingFeatureError, match="conversion"):
    model.compute_loss(no_label)


@pytest.mark.parametrize("kind, stage, expected", [
    ("pfd", "coarse", {"cross_clicks_cate_24h", "item_id", "user_id"}),
    ("md", "fine_cvr", {"item_id", "cross_clicks_cate_24h"}),
    ("lupi", "fine_cvr", {"dwell_seconds", "added_to_cart"}),
    ("pfd_md", "fine_cvr", {"dwell_seconds", "item_id"})])
def test_teacher_kinds_read_the_right_features(schema, kind, stage, expected):
  names = {f.name for f in models.teacher_features(kind, schema, stage)}
  assert expected <= names
  privileged = set(testing.privileged_columns(schema, stage))
  assert (names & privileged) == (set() if kind == "md" else privileged)
  if kind == "lupi":
    assert names == privileged


def test_spec_refuses_an_unknown_teacher_kind_or_mode():
  with pytest.raises(ValueError, match="unknown teacher kind 'big'"):
    models.DistillationSpec(teacher_kind="big")
  with pytest.raises(ValueError, match="mode"):
    models.DistillationSpec(mode="later")


def test_pretrained_mode_needs_a_teacher(schema):
  with pytest.raises(ValueError, match="pretrained_teacher"):
    _model(schema, teacher_kind="pfd", mode="pretrained")


def test_pfd_teacher_needs_a_stage_with_privileged_features(schema):
  with pytest.raises(ValueError, match="no privileged features"):
    models.teacher_features("pfd", schema, "fine_ctr")
