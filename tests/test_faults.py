"""Faults: killed runs resume to exactly the uninterrupted result, and never adopt another's state.

The SIGKILL tests run each command as its own process and kill it with signal 9 at a point
where it has written part of its output (generation: shard parts, no manifest; a stage with
default flags: its first backup; replay: its first chunk). The rerun with the same flags must
give the same bytes (world) or the same results (metrics, per-request rows) as a run never
interrupted. They are slow (several processes that import TensorFlow), as are the in-process
resume tests that train several times; CI runs them.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, List

import pandas as pd
import pytest

from data import files
from data import generate
from data import io
from data.config import WorldConfig
from models import testing
from stages import coarse
from stages import config as config_lib
from stages import fine
from stages import layout
from stages import retrieval

TINY = dict(hidden_units=(32, 16), embedding_dim=8, batch_size=512)
FINE_CTR = ("fine/ctr", "baseline")




def _fine(world_dir, model_dir, **overrides) -> config_lib.FineConfig:
  return config_lib.FineConfig(world_dir=world_dir, model_dir=str(model_dir),
                               **{**TINY, **overrides})


def _backup_dir(model_dir) -> str:
  return os.path.join(layout.stage_dir(str(model_dir), *FINE_CTR), "checkpoints", "backup")


def _without_time(metrics: dict) -> dict:
  return {k: v for k, v in metrics.items()
          if k not in ("train_seconds", "timed_seconds", "examples_per_second")}


# ----------------------------------------------------------------------------- resume safety


@pytest.mark.slow
def test_a_backup_of_another_configuration_is_discarded_not_adopted(tiny_world_dir, tmp_path):
  """Finding 2: a seed-0 backup is not restored into a seed-1 run with another learning rate."""
  models = tmp_path / "models"
  with pytest.raises(testing.Killed):
    fine.train(_fine(tiny_world_dir, models, epochs=2, checkpoint_every=5,
                     validation_fraction=0.0, callbacks=[testing.KillAtStep(12)]))
  assert os.listdir(_backup_dir(models))
  counter = testing.CountSteps()
  other = dict(epochs=2, checkpoint_every=5, seed=1, learning_rate=0.001,
               validation_fraction=0.0)
  rerun = fine.train(_fine(tiny_world_dir, models, callbacks=[counter], **other))
  fresh = fine.train(_fine(tiny_world_dir, tmp_path / "fresh", **other))
  steps_per_epoch = -(-fresh["n_train"] // TINY["batch_size"])
  assert counter.steps == 2 * steps_per_epoch  # started from step 0
  assert _without_time(rerun) == _without_time(fresh) | {"config_key": rerun["config_key"]}
  assert rerun["seed"] == 1


@pytest.mark.slow
def test_a_run_killed_in_its_second_epoch_resumes_from_the_first_epochs_end(tiny_world_dir,
                                                                           tmp_path):
  """Finding 3: with checkpoint_every larger than an epoch, the epoch's end is still saved.

  Without validation stopping, which would end the run within its first epoch here."""
  args = dict(epochs=2, checkpoint_every=10_000, validation_fraction=0.0)
  whole = fine.train(_fine(tiny_world_dir, tmp_path / "whole", **args))
  steps_per_epoch = -(-whole["n_train"] // TINY["batch_size"])
  with pytest.raises(testing.Killed):
    fine.train(_fine(tiny_world_dir, tmp_path / "killed", callbacks=[
        testing.KillAtStep(steps_per_epoch + 2)], **args))
  counter = testing.CountSteps()
  resumed = fine.train(_fine(tiny_world_dir, tmp_path / "killed", callbacks=[counter], **args))
  assert counter.steps == steps_per_epoch  # the second epoch only
  assert resumed["auc"] == pytest.approx(whole["auc"], abs=1e-9)


def test_a_rerun_of_a_finished_generation_removes_its_stale_shards(tiny_world_dir, tmp_path):
  """Finding 8: killed after the manifest, before `_shards/` was removed."""
  world_dir = str(tmp_path / "world")
  shutil.copytree(tiny_world_dir, world_dir)
  stale = os.path.join(world_dir, generate.SHARDS_DIR, "shard=00000")
  os.makedirs(stale)
  files.write_json(os.path.join(stale, generate.SHARD_MANIFEST), {"files": []})
  config = files.read_json(os.path.join(world_dir, io.MANIFEST))["config"]
  generate.generate(world_dir, WorldConfig.from_dict(config))
  assert not os.path.exists(os.path.join(world_dir, generate.SHARDS_DIR))


# ----------------------------------------------------------------------------- SIGKILL


def _python(*args: str) -> List[str]:
  return [sys.executable, "-m", *args]


def _kill_when(argv: List[str], ready: Callable[[], bool], timeout: float = 600) -> None:
  """Starts `argv`, SIGKILLs it as soon as `ready()` holds; fails if it finishes first."""
  process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.monotonic() + timeout
  try:
    while not ready():
      if process.poll() is not None:
        pytest.fail(f"{argv[2]} finished (rc {process.returncode}) before the kill point: "
                    f"{process.stderr.read().decode()[-2000:]}")
      if time.monotonic() > deadline:
        pytest.fail(f"{argv[2]} did not reach the kill point in {timeout}s")
      time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
  finally:
    process.wait()
    process.stderr.close()
  assert process.returncode == -signal.SIGKILL


def _run(argv: List[str]) -> None:
  done = subprocess.run(argv, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]


def _has_files(path: str) -> Callable[[], bool]:
  return lambda: os.path.isdir(path) and bool(os.listdir(path))


@pytest.mark.slow
def test_sigkilled_generation_reruns_to_the_same_world(tiny_world_dir, tmp_path):
  world_dir = str(tmp_path / "world")
  argv = _python("data.generate", f"--world_dir={world_dir}", "--preset=tiny", "--seed=0",
                 "--n_users=3000")
  _kill_when(argv, _has_files(os.path.join(world_dir, generate.SHARDS_DIR)))
  assert not os.path.exists(os.path.join(world_dir, io.MANIFEST))
  _run(argv)
  whole = str(tmp_path / "whole")
  _run(argv[:3] + [f"--world_dir={whole}"] + argv[4:])
  killed = files.read_json(os.path.join(world_dir, io.MANIFEST))
  assert killed == files.read_json(os.path.join(whole, io.MANIFEST))
  assert not os.path.exists(os.path.join(world_dir, generate.SHARDS_DIR))


@pytest.mark.slow
def test_sigkilled_stage_with_default_flags_resumes_to_the_same_metrics(tiny_world_dir,
                                                                       tmp_path):
  """Default --checkpoint_every: the tiny job has fewer steps per epoch, so only the
  epoch-end backup (finding 3) lets it resume."""
  def argv(model_dir):
    return _python("stages.fine", f"--world_dir={tiny_world_dir}", f"--model_dir={model_dir}",
                   "--epochs=2")
  killed, whole = tmp_path / "killed", tmp_path / "whole"
  _kill_when(argv(killed), _has_files(_backup_dir(killed)))
  _run(argv(killed))
  _run(argv(whole))
  def metrics(model_dir):
    return _without_time(files.read_json(
        os.path.join(layout.stage_dir(str(model_dir), *FINE_CTR), "metrics.json")))
  assert metrics(killed) == metrics(whole)
  assert not os.listdir(_backup_dir(killed)) if os.path.isdir(_backup_dir(killed)) else True


@pytest.mark.slow
def test_sigkilled_replay_resumes_to_the_same_rows(tiny_world_dir, tmp_path):
  models = str(tmp_path / "models")
  settings = dict(TINY, epochs=1, checkpoint_every=1000)
  retrieval.train(config_lib.RetrievalConfig(world_dir=tiny_world_dir, model_dir=models,
                                             export_k=300, **settings))
  for task, variant in (("ctr", "baseline"), ("cvr", "pfd")):
    fine.train(config_lib.FineConfig(world_dir=tiny_world_dir, model_dir=models, task=task,
                                     variant=variant, **settings))
  coarse.train(config_lib.CoarseConfig(world_dir=tiny_world_dir, model_dir=models,
                                       variant="pfd_md", **settings))

  def argv(run_dir):
    return _python("experiments.replay", f"--world_dir={tiny_world_dir}",
                   f"--model_dir={models}", f"--run_dir={run_dir}", "--day=4",
                   "--max_requests=400", "--batch_requests=20", "--cascade_sample=60",
                   "--funnel=retrieval:200,coarse:50,fine:10")
  killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
  _kill_when(argv(killed), lambda: os.path.exists(
      os.path.join(killed, ".partial", "chunk-00000.parquet")))
  assert not os.path.exists(os.path.join(killed, "summary.json"))
  _run(argv(killed))
  _run(argv(whole))
  pd.testing.assert_frame_equal(pd.read_parquet(os.path.join(killed, "per_request.parquet")),
                                pd.read_parquet(os.path.join(whole, "per_request.parquet")))
  assert not os.path.exists(os.path.join(killed, ".partial"))
