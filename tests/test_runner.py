"""experiments.runner: stage runs in child processes, configured exactly like in-process ones."""

import dataclasses
import os

import pytest

from data.plumbing import files
from experiments import jobs
from experiments import runner
from experiments import trial_pool
from models import export
from stages import catalogue
from stages import config as config_lib


def test_command_line_carries_every_setting_and_only_the_stages_own():
  config = config_lib.CoarseConfig(world_dir="W", model_dir="M", train_days=[1, 2], seed=3,
                                   variant="pfd_md", unshared_features=(),
                                   share_embeddings=False, reuse=True, distill_unlabelled=True)
  argv = jobs.command_line(config)
  assert argv[1:3] == ["-m", "stages.coarse"]
  for flag in ("--world_dir=W", "--model_dir=M", "--train_days=1,2", "--seed=3",
               "--variant=pfd_md", "--unshared_features=", "--noshare_embeddings", "--reuse",
               "--distill_unlabelled", "--teacher_variant=baseline"):
    assert flag in argv, flag
  assert not any(a.startswith(("--mode=", "--eval_day", "--callbacks")) for a in argv)
  # Every flag is a field of the config: the command line has no hand-kept list.
  names = {a[2:].split("=")[0] for a in argv[3:]}
  fields = {f.name for f in config_lib.flag_fields(config_lib.CoarseConfig)}
  assert names - {"noshare_embeddings"} <= fields
  retrieval = catalogue.RETRIEVAL.make_config(config, variant="baseline")
  assert "--distill_unlabelled" not in jobs.command_line(retrieval)
  assert jobs.command_line(retrieval)[2] == "stages.retrieval"
  cvr = catalogue.FINE_CVR.make_config(config)
  assert "--task=cvr" in jobs.command_line(cvr)


def _fake_export(model_dir, stage, variant, config_key):
  path = os.path.join(model_dir, *stage.split("/"), variant, "saved_model", export.META_FILE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  files.write_json(path, {"extra": {"config_key": config_key}})


def test_the_receipt_names_the_fine_ctr_export_that_teaches_coarse_pfd_md(tiny_world_dir,
                                                                          tmp_path):
  model_dir = str(tmp_path)
  student = config_lib.CoarseConfig(world_dir=tiny_world_dir, model_dir=model_dir,
                                    variant="pfd_md")
  baseline = dataclasses.replace(student, variant="baseline")

  def digest(config):
    task = catalogue.of(config).task_class()
    return runner.command_digest(jobs.command_line(config), tiny_world_dir,
                                 task.upstream(config))

  missing = digest(student), digest(baseline)
  _fake_export(model_dir, "fine/ctr", "baseline", "aaaa")
  first = digest(student), digest(baseline)
  _fake_export(model_dir, "fine/ctr", "baseline", "bbbb")
  second = digest(student), digest(baseline)
  assert len({missing[0], first[0], second[0]}) == 3  # The student's receipt follows its teacher.
  assert missing[1] == first[1] == second[1]  # The baseline reads no teacher.


@pytest.mark.slow
def test_a_stage_run_in_a_child_process_matches_the_same_run_in_process(tiny_world_dir, tmp_path):
  settings = dict(hidden_units=(16,), embedding_dim=4, batch_size=512, max_steps=10)
  child = runner.run_stage(config_lib.FineConfig(
      world_dir=tiny_world_dir, model_dir=str(tmp_path / "child"), **settings))
  from stages import fine
  here = fine.train(config_lib.FineConfig(world_dir=tiny_world_dir,
                                          model_dir=str(tmp_path / "here"), **settings))
  for key in ("auc", "gauc", "logloss", "config_key", "n_train"):
    assert child[key] == here[key], key


@pytest.mark.slow
def test_a_finished_run_is_reused_without_a_process_and_a_changed_one_is_not(
    tiny_world_dir, tmp_path, monkeypatch):
  config = config_lib.FineConfig(world_dir=tiny_world_dir, model_dir=str(tmp_path), reuse=True,
                                 hidden_units=(8,), embedding_dim=4, batch_size=512,
                                 max_steps=3)
  first = runner.run_stage(config)
  spawned = []
  real_run = trial_pool.WorkerPool.run
  monkeypatch.setattr(trial_pool.WorkerPool, "run",
                      lambda pool, job, label: spawned.append(job) or real_run(pool, job, label))
  reused = runner.run_stage(config)
  assert spawned == []
  # The same run's metrics; the cost of the job that trained it is the first call's only (a
  # reuse runs no job, so it reports none).
  job_cost = {"job_cpu_seconds", "job_wall_seconds"}
  assert job_cost <= set(first) and not job_cost & set(reused)
  assert reused == {k: v for k, v in first.items() if k not in job_cost}
  # Another setting is another command: the child decides (and here retrains).
  changed = runner.run_stage(dataclasses.replace(config, max_steps=4))
  assert len(spawned) == 1 and changed["config_key"] != first["config_key"]
  # Back to the first command: its receipt was replaced by the other run's, so it runs again.
  assert runner.run_stage(config)["config_key"] == first["config_key"]
  assert len(spawned) == 2


def _fake_runs(monkeypatch, seconds=0.05):
  """run_stage replaced by a sleep that records (event, config) and the peak concurrency."""
  import threading
  import time
  log, lock, state = [], threading.Lock(), {"running": 0, "peak": 0}

  def fake_run_stage(job, pool=None):
    config = job.config
    with lock:
      log.append(("start", config))
      state["running"] += 1
      state["peak"] = max(state["peak"], state["running"])
    time.sleep(seconds)
    with lock:
      state["running"] -= 1
      log.append(("end", config))
    return {"auc": float(config)}

  monkeypatch.setattr(runner, "run_stage", fake_run_stage)
  return log, state


def test_run_stages_runs_at_most_workers_at_once_and_each_after_what_it_reads(monkeypatch):
  log, state = _fake_runs(monkeypatch)
  after = [[], [], [0], [0, 1], []]
  results = runner.run_stages([0, 1, 2, 3, 4], after, workers=2)
  assert [r["auc"] for r in results] == [0, 1, 2, 3, 4]  # declared order, whatever finished first
  assert state["peak"] == 2
  for i, needs in enumerate(after):
    for j in needs:
      assert log.index(("end", j)) < log.index(("start", i)), (i, j)


def test_run_stages_starts_no_second_run_without_the_memory_for_it(monkeypatch):
  _, state = _fake_runs(monkeypatch, seconds=0.01)
  monkeypatch.setattr(runner, "available_gb", lambda: 5.0)
  assert runner.worker_count(4, 2.0) == 2 and runner.worker_count(4, 0) == 4
  assert runner.worker_count(4, 8.0) == 1  # one run always goes, memory or not
  runner.run_stages(list(range(6)), [[]] * 6, workers=4, max_worker_gb=2.0)
  assert state["peak"] <= 2


def test_run_stages_raises_the_failure_of_a_run(monkeypatch):
  def failing(job, pool=None):
    if job.config == 1:
      raise config_lib.StageError("boom")
    return {}
  monkeypatch.setattr(runner, "run_stage", failing)
  with pytest.raises(config_lib.StageError, match="boom"):
    runner.run_stages([0, 1, 2], [[], [], [1]], workers=2)
