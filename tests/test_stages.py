"""Stage commands on the tiny world: train, evaluate, export, resume, refuse bad input."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import data
from data.plumbing import files
from data.stats import metrics as metrics_lib
from data.world import numeric
from data.world import schema as schema_lib
from data.world import splits
from models import distillation
from models import export
from models import pipeline
from models import rankers
from models import testing
from stages import catalogue
from stages import coarse
from stages import config as config_lib
from stages import driver
from stages import fine
from stages import layout
from stages import retrieval
from stages import serving

# The tiny world's held-out rows hold a few dozen clicks: validation stopping stays on for the
# mechanics tests (the default floor, 100 positives, is for real evaluation).
TINY = dict(hidden_units=(32, 16), embedding_dim=8, batch_size=512, epochs=1,
            checkpoint_every=20, min_validation_positives=10)


def _config(world_dir, model_dir, config_class=config_lib.FineConfig, **overrides):
  return config_class(world_dir=world_dir, model_dir=str(model_dir), **{**TINY, **overrides})


def _coarse(world_dir, model_dir, **overrides) -> config_lib.CoarseConfig:
  return _config(world_dir, model_dir, config_lib.CoarseConfig, **overrides)


@pytest.fixture(scope="module")
def trained(tiny_world_dir, tmp_path_factory):
  """One model dir with every stage the others need: retrieval, fine CTR and CVR, coarse."""
  model_dir = tmp_path_factory.mktemp("models")
  results = {
      "retrieval": retrieval.train(_config(tiny_world_dir, model_dir,
                                           config_lib.RetrievalConfig, export_k=300)),
      "fine_ctr": fine.train(_config(tiny_world_dir, model_dir, task="ctr")),
      "fine_cvr": fine.train(_config(tiny_world_dir, model_dir, variant="pfd", task="cvr")),
      "coarse_pfd_md": coarse.train(_coarse(tiny_world_dir, model_dir, variant="pfd_md")),
  }
  return str(model_dir), results


@pytest.mark.slow
def test_every_stage_writes_metrics_and_a_serving_export(trained):
  model_dir, results = trained
  for stage, variant in [("retrieval", "baseline"), ("fine/ctr", "baseline"),
                         ("fine/cvr", "pfd"), ("coarse", "pfd_md")]:
    out = layout.stage_dir(model_dir, stage, variant)
    with open(os.path.join(out, "metrics.json")) as f:
      metrics = json.load(f)
    assert metrics["stage"] in ("retrieval", "fine_ctr", "fine_cvr", "coarse")
    assert os.path.exists(os.path.join(out, "saved_model", "saved_model.pb"))
    assert os.path.isdir(os.path.join(out, "tensorboard"))
    assert os.path.exists(os.path.join(out, "checkpoints", "final", "ckpt.index"))
  for name in ("fine_ctr", "fine_cvr", "coarse_pfd_md"):
    for key in ("auc", "gauc", "logloss", "calibration", "n_eval"):
      assert key in results[name], (name, key)
    assert 0.5 < results[name]["auc"] <= 1.0, (name, results[name]["auc"])
  assert "teacher_auc" in results["fine_cvr"] and "teacher_auc" in results["coarse_pfd_md"]
  assert "ctcvr_auc" in results["fine_cvr"]
  recall = [results["retrieval"][f"recall@{k}"] for k in (50, 100)]
  assert 0.0 < recall[0] <= recall[1] <= 1.0


@pytest.mark.slow
def test_pfd_md_coarse_teacher_is_the_fine_ctr_model(trained):
  _, results = trained
  assert results["coarse_pfd_md"]["teacher_auc"] == pytest.approx(results["fine_ctr"]["auc"])


@pytest.mark.slow
def test_pfd_md_coarse_reads_its_teacher_from_teacher_model_dir(trained, tiny_world_dir,
                                                                 tmp_path):
  """A fine ranker trained elsewhere (here: the fixture's dir) teaches; the student's own dir
  has no fine CTR model, and a teacher dir of another world is refused."""
  teacher_dir, results = trained
  student = coarse.train(_coarse(tiny_world_dir, tmp_path / "student", variant="pfd_md",
                                 teacher_model_dir=teacher_dir))
  assert student["teacher_auc"] == pytest.approx(results["fine_ctr"]["auc"])
  assert not os.path.exists(layout.stage_dir(str(tmp_path / "student"), "fine/ctr", "baseline"))
  os.makedirs(tmp_path / "elsewhere")
  files.write_json(os.path.join(tmp_path, "elsewhere", "world.json"), {"world_hash": "other"})
  with pytest.raises(config_lib.StageError, match="holds models of another world"):
    coarse.train(_coarse(tiny_world_dir, tmp_path / "student2", variant="pfd_md",
                         teacher_model_dir=str(tmp_path / "elsewhere")))


def _privileged_perturbed(arrays, schema, stage):
  changed = dict(arrays)
  rng = np.random.default_rng(1)
  for feature in schema.features:
    if feature.name in arrays and feature.name not in {f.name for f in
                                                       schema.serving_features(stage)}:
      changed[feature.name] = rng.permutation(arrays[feature.name]) + 3
  return changed


@pytest.mark.parametrize("task,variant,stage", [("ctr", "baseline", "fine_ctr"),
                                                ("cvr", "pfd", "fine_cvr")])
@pytest.mark.slow
def test_served_fine_scores_ignore_privileged_columns(trained, tiny_world_dir, task, variant,
                                                      stage):
  model_dir, _ = trained
  world = data.open_world(tiny_world_dir)
  served = serving.load_fine(model_dir, task, variant)
  assert not set(served.input_names) - {f.name for f in world.schema.serving_features(stage)}
  arrays = world.log_arrays([world.days[-1]])
  before = served.predict(arrays)
  after = served.predict(_privileged_perturbed(arrays, world.schema, stage))
  np.testing.assert_array_equal(before, after)


@pytest.mark.slow
def test_served_coarse_scores_ignore_cross_features(trained, tiny_world_dir):
  model_dir, _ = trained
  world = data.open_world(tiny_world_dir)
  scorer = serving.load_coarse(model_dir, "pfd_md")
  assert scorer.item_vectors.shape[0] == len(world.items)
  signature = tf.saved_model.load(scorer.path).signatures["user_vectors"]
  inputs = set(signature.structured_input_signature[1])
  assert inputs and not inputs & {f.name for f in world.schema.privileged_features("coarse")}
  arrays = world.log_arrays([world.days[-1]])
  items = arrays["item_id"][:, None]
  before = scorer.score(arrays, items)
  after = scorer.score(_privileged_perturbed(arrays, world.schema, "coarse"), items)
  np.testing.assert_array_equal(before, after)


@pytest.mark.slow
def test_retrieval_index_serves_from_user_side_only(trained, tiny_world_dir):
  model_dir, _ = trained
  world = data.open_world(tiny_world_dir)
  index = serving.load_retrieval(model_dir)
  assert set(index.query_inputs) <= {f.name for f in world.schema.serving_features("retrieval")}
  assert all(world.schema[n].entity in (schema_lib.USER, schema_lib.CONTEXT)
             for n in index.query_inputs)
  requests = serving.request_rows(world, [world.days[-1]],
                                  world.request_arrays([world.days[-1]])["request_id"][:50])
  top = index.top_items(requests, k=100)
  assert top.shape == (50, 100)
  assert all(len(set(row)) == 100 for row in top)


@pytest.mark.parametrize("stage", ["coarse", "fine_cvr"])
def test_export_refuses_a_model_that_reads_privileged_features(tiny_world_dir, tmp_path, stage):
  world = data.open_world(tiny_world_dir)
  teacher = distillation.build_teacher("pfd", world.schema, stage, student_widths=(8,),
                                       embedding_dim=4)
  privileged = world.schema.privileged_features(stage)[0].name
  with pytest.raises(ValueError, match=privileged):
    export.export_serving(teacher, stage, world.schema, str(tmp_path / "export"))
  assert not os.path.exists(tmp_path / "export")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["baseline", "pfd", "md", "lupi"])
def test_coarse_variants_train_on_tiny(tiny_world_dir, tmp_path, variant):
  metrics = coarse.train(_coarse(tiny_world_dir, tmp_path, variant=variant, max_steps=30))
  assert 0.4 < metrics["auc"] < 1.0
  assert ("teacher_auc" in metrics) == (variant != "baseline")


@pytest.mark.slow
def test_cvr_lupi_and_md_train_with_a_pretrained_teacher(tiny_world_dir, tmp_path):
  for variant in ("lupi", "md"):
    metrics = fine.train(_config(tiny_world_dir, tmp_path, variant=variant, mode="pretrained",
                                 max_steps=20, task="cvr"))
    assert metrics["mode"] == "pretrained" and "teacher_auc" in metrics
    teacher_ckpt = os.path.join(layout.stage_dir(str(tmp_path), "fine/cvr", variant),
                                "teacher", "checkpoints", "final", "ckpt.index")
    assert os.path.exists(teacher_ckpt)


def test_same_seed_gives_same_metrics_and_the_config_is_left_as_given(tiny_world_dir, tmp_path):
  configs = [_config(tiny_world_dir, tmp_path / f"run{i}", max_steps=30, task="ctr")
             for i in range(2)]
  given = [dataclasses.asdict(c) for c in configs]
  runs = [fine.train(config) for config in configs]
  for run in runs:
    for timing in ("train_seconds", "timed_seconds", "examples_per_second"):
      run.pop(timing)
  assert runs[0] == runs[1]
  # Training resolved the eval day, the training days and the mode in a copy, not in place.
  assert [dataclasses.asdict(c) for c in configs] == given
  assert configs[0].eval_day is None and configs[0].train_days is None
  assert configs[0].mode is None and runs[0]["eval_day"] == 4




@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(tiny_world_dir, tmp_path):
  # Fixed-length training: validation stopping keeps its best weights in memory only.
  args = dict(epochs=2, checkpoint_every=10, task="ctr", validation_fraction=0.0)
  uninterrupted = fine.train(_config(tiny_world_dir, tmp_path / "whole", **args))
  with pytest.raises(testing.Killed):
    fine.train(_config(tiny_world_dir, tmp_path / "killed", callbacks=[testing.KillAtStep(90)],
                       **args))
  backup = os.path.join(layout.stage_dir(str(tmp_path / "killed"), "fine/ctr", "baseline"),
                        "checkpoints", "backup")
  assert os.path.isdir(backup) and os.listdir(backup)
  counter = testing.CountSteps()
  resumed = fine.train(_config(tiny_world_dir, tmp_path / "killed", callbacks=[counter],
                               **args))
  steps_per_epoch = -(-uninterrupted["n_train"] // TINY["batch_size"])
  # Backups: at each epoch's end and every 10 steps into an epoch; the last before step 90.
  last_backup = steps_per_epoch + (90 - steps_per_epoch) // 10 * 10
  assert counter.steps == 2 * steps_per_epoch - last_backup  # Picks up at the last backup.
  assert resumed["auc"] == pytest.approx(uninterrupted["auc"], abs=1e-9)
  assert not os.path.exists(backup) or not os.listdir(backup)


def test_killed_training_with_validation_stopping_resumes_the_same_search(tiny_world_dir,
                                                                          tmp_path):
  # The search (curve, best check, patience count, best weights) is part of the backup.
  args = dict(epochs=2, checkpoint_every=10, task="ctr", validate_every=10, patience=100)
  uninterrupted = fine.train(_config(tiny_world_dir, tmp_path / "whole", **args))
  with pytest.raises(testing.Killed):
    fine.train(_config(tiny_world_dir, tmp_path / "killed", callbacks=[testing.KillAtStep(95)],
                       **args))
  resumed = fine.train(_config(tiny_world_dir, tmp_path / "killed", **args))
  curve = uninterrupted["learning_curve"]
  assert len(curve) > 10 and any(point["step"] < 90 for point in curve)
  def flat(points):
    return [value for point in points for value in (point["step"], point["logloss"],
                                                     point["auc"])]
  assert flat(resumed["learning_curve"]) == pytest.approx(flat(curve), abs=1e-9)
  assert resumed["best_step"] == uninterrupted["best_step"] < curve[-1]["step"]
  assert resumed["auc"] == pytest.approx(uninterrupted["auc"], abs=1e-9)


@pytest.mark.parametrize("change,message", [
    (dict(variant="pfd", task="ctr"), "not valid for --task=ctr"),
    (dict(eval_day=99, task="ctr"), "--eval_day=99 is not a day of the world"),
    (dict(train_days=[1, 2, 3], eval_day=3, task="ctr"), "overlap"),
    (dict(train_days=[1, 2, 3, 4], task="ctr"), "overlap"),
    (dict(train_days="1-x", task="ctr"), "--train_days: cannot parse"),
    (dict(distill_lambda=1.5, task="cvr", variant="pfd"), "--distill_lambda must be in"),
    (dict(batch_size=-1, task="ctr"), "--batch_size must be >= 0"),
    (dict(seed=-1, task="ctr"), "--seed must be >= 0"),
    (dict(validation_fraction=1.0, task="ctr"), "--validation_fraction must be in"),
    (dict(patience=0, task="ctr"), "--patience must be >= 1"),
    (dict(swap_step=-2, task="cvr", variant="pfd"), "--swap_step must be >= 0"),
])
def test_bad_stage_input_is_refused(tiny_world_dir, tmp_path, change, message):
  with pytest.raises(config_lib.StageError, match=message):
    fine.train(_config(tiny_world_dir, tmp_path, **change))


def test_model_dir_of_another_world_is_refused(tiny_world_dir, tmp_path):
  files.write_json(str(tmp_path / "world.json"), {"world_hash": "another"})
  with pytest.raises(config_lib.StageError, match="another world"):
    fine.train(_config(tiny_world_dir, tmp_path, task="ctr"))


def test_coarse_pfd_md_without_fine_ctr_names_the_command(tiny_world_dir, tmp_path):
  with pytest.raises(config_lib.StageError, match="python -m stages.fine --task=ctr"):
    coarse.train(_coarse(tiny_world_dir, tmp_path, variant="pfd_md"))


def _cli(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        timeout=300)


@pytest.mark.slow
def test_cli_reports_bad_flags_in_one_line(tiny_world_dir, tmp_path):
  result = _cli("stages.fine", "--task=cvr", "--variant=nonsense", f"--world_dir={tiny_world_dir}",
                f"--model_dir={tmp_path}")
  assert result.returncode != 0
  errors = [l for l in result.stderr.splitlines() if l.startswith("stages.fine: error:")]
  assert len(errors) == 1 and "--variant=nonsense" in errors[0]
  result = _cli("stages.coarse", f"--world_dir={tmp_path / 'nowhere'}", f"--model_dir={tmp_path}")
  assert result.returncode != 0 and "python -m data.generate" in result.stderr


@pytest.mark.slow
def test_unlabelled_candidates_are_retrieved_unshown_and_labelled_minus_one(trained,
                                                                             tiny_world_dir):
  model_dir, _ = trained
  config = _coarse(tiny_world_dir, model_dir, variant="pfd", train_days=[1, 2],
                   distill_unlabelled=True, unlabelled_per_request=3)
  world = data.open_world(config.world_dir)
  train = world.log_arrays(config.train_days)
  rows = coarse.unlabelled_candidates(world, config, train)
  n_requests = len(np.unique(train["request_id"]))
  assert len(rows["item_id"]) == 3 * n_requests
  assert (rows["click"] == schema_lib.UNLABELLED).all()
  assert (rows["conversion"] == schema_lib.UNLABELLED).all()
  shown = set(zip(train["request_id"].tolist(), train["item_id"].tolist()))
  picked = list(zip(rows["request_id"].tolist(), rows["item_id"].tolist()))
  assert not shown & set(picked) and len(set(picked)) == len(picked)
  top = serving.load_retrieval(model_dir).top_items(
      serving.request_rows(world, [1, 2], np.unique(train["request_id"])), k=100)
  assert (rows["item_id"].reshape(n_requests, 3)[:, :, None] == top[:, None, :]).any(-1).all()
  again = coarse.unlabelled_candidates(world, config, train)
  np.testing.assert_array_equal(again["item_id"], rows["item_id"])


def test_coarse_reuse_is_keyed_on_the_fine_ctr_export_that_teaches_it(tiny_world_dir, tmp_path):
  teacher = _config(tiny_world_dir, tmp_path, task="ctr", max_steps=5)
  student = _coarse(tiny_world_dir, tmp_path, variant="pfd_md", max_steps=5, reuse=True)
  first_teacher = fine.train(teacher)
  first = coarse.train(student)
  assert first["upstream"] == {"fine/ctr/baseline": first_teacher["config_key"]}
  again = coarse.train(student)  # Same teacher: reused, not retrained.
  assert (again["config_key"], again["train_seconds"]) == (first["config_key"],
                                                            first["train_seconds"])
  # Retraining the fine CTR model alone must not leave the old student standing.
  second_teacher = fine.train(dataclasses.replace(teacher, max_steps=6))
  second = coarse.train(student)
  assert second["config_key"] != first["config_key"]
  assert second["upstream"] == {"fine/ctr/baseline": second_teacher["config_key"]}
  assert second["teacher_auc"] == pytest.approx(second_teacher["auc"])


def test_configs_are_checked_where_they_are_built():
  base = dict(world_dir="W", model_dir="M")
  with pytest.raises(config_lib.StageError, match="--world_dir is required"):
    config_lib.FineConfig(model_dir="M")
  with pytest.raises(config_lib.StageError, match="--variant=pfd: retrieval has one variant"):
    config_lib.RetrievalConfig(variant="pfd", **base)
  assert not config_lib.RetrievalConfig(validation_fraction=0.1, **base).validates
  with pytest.raises(config_lib.StageError, match="--distill_unlabelled needs a teacher"):
    config_lib.CoarseConfig(distill_unlabelled=True, **base)
  with pytest.raises(config_lib.StageError, match="--ctr_variant=pfd"):
    config_lib.FineConfig(task="cvr", ctr_variant="pfd", **base)
  config = config_lib.CoarseConfig(train_days="1-3,5", hidden_units=[8, 4], **base)
  assert config.train_days == (1, 2, 3, 5) and config.hidden_units == (8, 4)
  # fine CTR has no privileged features: only the kinds that add none
  assert config_lib.FineConfig(**base).variants() == ("baseline", "md", "self")


# ------------------------------------------------------------ training regime (issue 11 item 1)


class _ValidationAucAtEnd(tf.keras.callbacks.Callback):
  """The student's AUC on `rows` once training has ended (after the best weights return)."""

  def __init__(self, rows, label):
    super().__init__()
    self.rows, self.label, self.auc = rows, label, None

  def on_train_end(self, logs=None):
    logits = pipeline.predict(lambda b: self.model.student(b, training=False), self.rows)
    self.auc = metrics_lib.auc(self.rows[self.label], numeric.sigmoid(logits))


def test_validation_stopping_ends_an_overfitting_run_early_with_its_best_weights(
    tiny_world_dir, tmp_path):
  world = data.load(tiny_world_dir)
  _, held_out = splits.split_validation(world.log_arrays([1, 2, 3]), 0.1, seed=0)
  final = _ValidationAucAtEnd(held_out, "click")
  epochs = 6
  result = fine.train(_config(tiny_world_dir, tmp_path, task="ctr", learning_rate=0.05,
                              epochs=epochs, validation_fraction=0.1, validate_every=5,
                              patience=2, callbacks=[final]))
  steps_per_epoch = -(-result["n_train"] // TINY["batch_size"])
  curve = result["learning_curve"]
  assert result["n_validation"] == len(held_out["click"])
  assert result["stopped_step"] == curve[-1]["step"] < (epochs - 1) * steps_per_epoch
  best = max(curve, key=lambda point: point["auc"])  # the default --monitor=auc
  assert result["best_step"] == best["step"] < result["stopped_step"]
  assert final.auc == pytest.approx(best["auc"], abs=1e-9)  # the best weights came back
  # Headroom: the oracle's ranking is the eAUC ceiling of any model on the same rows.
  for key in ("ceiling_auc", "eauc", "ceiling_eauc"):
    assert 0.5 < result[key] <= 1.0
  assert result["eauc"] <= result["ceiling_eauc"] + 1e-12


def test_validation_rows_are_whole_last_day_requests_left_out_of_training(tiny_world_dir,
                                                                          tmp_path):
  world = data.load(tiny_world_dir)
  rows = world.log_arrays([1, 2, 3])
  config = _config(tiny_world_dir, tmp_path, task="ctr", validation_fraction=0.2)
  inputs = driver.hold_out_validation(driver.Inputs(dict(rows)), config, "click")
  train, held_out = inputs.train, inputs.validation
  assert len(train["click"]) + len(held_out["click"]) == len(rows["click"])
  assert set(np.unique(held_out["day"])) == {3}
  assert not np.isin(held_out["request_id"], train["request_id"]).any()
  off = dataclasses.replace(config, validation_fraction=0.0)
  assert driver.hold_out_validation(driver.Inputs(dict(rows)), off, "click").validation is None


def test_batch_size_zero_is_the_stages_default_and_an_explicit_one_wins(tiny_world_dir,
                                                                        tmp_path):
  world = data.load(tiny_world_dir)
  def resolved(config_class=config_lib.FineConfig, **settings):
    config = config_class(world_dir=tiny_world_dir, model_dir=str(tmp_path), **settings)
    return driver.resolve(config, world).batch_size
  assert resolved(task="cvr") == catalogue.CLICK_BATCH_SIZE == 128  # clicks: few rows
  assert resolved(task="ctr") == catalogue.IMPRESSION_BATCH_SIZE == 1024
  assert resolved(config_lib.CoarseConfig) == 1024
  assert resolved(task="cvr", batch_size=2048) == 2048
  assert resolved(config_lib.TrainConfig) == 0  # a driver's base: each stage fills in its own


def test_validation_with_too_few_positives_is_off_and_every_row_trains(tiny_world_dir,
                                                                       tmp_path):
  world = data.load(tiny_world_dir)
  rows = world.log_arrays([1, 2, 3])
  config = _config(tiny_world_dir, tmp_path, task="ctr", validation_fraction=0.2)
  held = driver.hold_out_validation(driver.Inputs(dict(rows)), config, "click").validation
  positives = int(held["click"].sum())
  assert positives > 0
  enough = dataclasses.replace(config, min_validation_positives=positives)
  assert (driver.hold_out_validation(driver.Inputs(dict(rows)), enough, "click").validation
          is not None)
  sparse = dataclasses.replace(config, min_validation_positives=positives + 1)
  inputs = driver.hold_out_validation(driver.Inputs(dict(rows)), sparse, "click")
  assert inputs.validation is None and f"{positives} positives" in inputs.validation_skipped
  assert len(inputs.train["click"]) == len(rows["click"])


def test_distilled_run_reports_the_teacher_eauc_and_waits_for_the_teacher(tiny_world_dir,
                                                                          tmp_path):
  config = _config(tiny_world_dir, tmp_path, task="cvr", variant="pfd", max_steps=6)
  result = fine.train(config)
  assert 0.0 <= result["teacher_eauc"] <= result["ceiling_eauc"] + 1e-12
  n_rows = 1000
  steps = -(-n_rows // config.batch_size)
  assert config.resolved_swap_step(n_rows) == int(config_lib.AUTO_SWAP_FRACTION * steps)
  assert dataclasses.replace(config, swap_step=7).resolved_swap_step(n_rows) == 7


def test_retrieval_evaluation_in_chunks_equals_the_whole_day_at_once(tiny_world_dir):
  """evaluate_index keeps per-request figures chunk by chunk (for memory); its means must be
  those of scoring every request of the day in one go. Any index will do: an untrained one."""
  world = data.load(tiny_world_dir, verify=False)
  scorer = distillation.build_student(world.schema, "retrieval", architecture=rankers.TWO_TOWER,
                                      widths=(8,), embedding_dim=4, name="retrieval")
  index = retrieval.build_index(world, retrieval.RetrievalModel(scorer, 1.0), k=300)
  day = world.days[-1]
  whole = retrieval.evaluate_index(world, day, index, chunk=10 ** 9)
  chunked = retrieval.evaluate_index(world, day, index, chunk=7)
  assert whole["n_eval"] > 7 and set(chunked) == set(whole)
  for name, value in whole.items():
    assert chunked[name] == pytest.approx(value, rel=1e-12, abs=0), name
