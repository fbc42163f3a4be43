"""Faults: killed runs resume to exactly the uninterrupted result, and never adopt another's state.

The SIGKILL tests run each command as its own process and kill it with signal 9 at a point
where it has written part of its output (generation: shard parts, no manifest; a stage with
default flags: its first backup; replay: its first chunk). The rerun with the same flags must
give the same bytes (world) or the same results (metrics, per-request rows) as a run never
interrupted. They are slow (several processes that import TensorFlow), as are the in-process
resume tests that train several times; CI runs them.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, List

import pandas as pd
import pytest

from data import generate
from data.plumbing import files
from data.world import io
from data.world.config import WorldConfig
from experiments import cluster as cluster_lib
from models import testing
from stages import coarse
from stages import config as config_lib
from stages import fine
from stages import layout
from stages import retrieval
from tests import bad_input
from tests import mounts

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


# ------------------------------------------------------------------- full and read-only disks
# (issue 22, items 16 and 17: one line naming the path, exit status 2, no temporary file left)


def _one_line(code: int, output: str, what: str) -> None:
  assert code == 2, output
  assert "Traceback" not in output, output
  assert what in output, output


def test_generation_onto_a_full_disk_fails_in_one_line_leaving_no_temporary_file(tmp_path,
                                                                                 monkeypatch):
  """22.16: ENOSPC while writing the world's parts names the file being written."""
  with mounts.full_disk(str(tmp_path / "disk"), monkeypatch) as disk:
    world_dir = os.path.join(disk, "world")
    code, out, err = bad_input.run_in_process("data.generate", [
        f"--world_dir={world_dir}", "--preset=tiny"])
    _one_line(code, out + err, "no space left on device")
    assert f"writing {world_dir}/" in err, err
    assert not mounts.leftovers(disk)


def test_generation_onto_a_read_only_filesystem_fails_in_one_line(tmp_path, monkeypatch):
  """22.17: EROFS, even for root, is one line naming the path, not a traceback."""
  with mounts.read_only_dir(str(tmp_path / "ro"), monkeypatch) as ro:
    code, out, err = bad_input.run_in_process("data.generate", [
        f"--world_dir={ro}/world", "--preset=tiny"])
    _one_line(code, out + err, "read-only file system")
    assert f"{ro}/world" in err, err


def test_a_stage_with_a_read_only_model_dir_fails_in_one_line(tiny_world_dir, tmp_path,
                                                              monkeypatch):
  """22.17: the stage's first write (MODEL_DIR/world.json) on a read-only filesystem."""
  with mounts.read_only_dir(str(tmp_path / "ro"), monkeypatch) as ro:
    code, out, err = bad_input.run_in_process("stages.fine", [
        f"--world_dir={tiny_world_dir}", f"--model_dir={ro}/models"])
    _one_line(code, out + err, "read-only file system")


@pytest.mark.slow
def test_a_stage_whose_disk_fills_while_it_trains_fails_in_one_line(tiny_world_dir, tmp_path,
                                                                    monkeypatch):
  """22.16: the disk fills during checkpoints or the export (TensorFlow's writes, whose
  ResourceExhausted / Internal errors carry the OS's text): one line, no temporary dir left."""
  with mounts.full_disk(str(tmp_path / "disk"), monkeypatch, size="600k", fill=False,
                        real=True) as disk:
    code, out, err = bad_input.run_in_process("stages.fine", [
        f"--world_dir={tiny_world_dir}", f"--model_dir={disk}/models", "--hidden_units=8",
        "--embedding_dim=4", "--max_steps=2", "--validation_fraction=0"])
    _one_line(code, out + err, "no space left on device")
    assert not mounts.leftovers(disk)


@pytest.mark.slow
def test_a_replay_onto_a_full_disk_fails_in_one_line_and_leaves_no_run_dir(
    tiny_world_dir, tiny_models_root, tmp_path, monkeypatch):
  """22.16 and 22.29: the replay's first write fails; nothing of the run is left behind."""
  with mounts.full_disk(str(tmp_path / "disk"), monkeypatch) as disk:
    os.makedirs(os.path.join(disk, "runs"))  # a directory needs no data page on tmpfs
    run_dir = os.path.join(disk, "runs", "r")
    code, out, err = bad_input.run_in_process("experiments.replay", [
        f"--world_dir={tiny_world_dir}", f"--model_dir={tiny_models_root}/funnel",
        f"--run_dir={run_dir}", "--max_requests=20", "--funnel=retrieval:50,coarse:20,fine:5"])
    _one_line(code, out + err, "no space left on device")
    assert not os.path.exists(run_dir)
    assert not mounts.leftovers(disk)


# ----------------------------------------------------------------------------- bounded waits
# (issue 22, items 10, 11, 15: every network wait has a timeout flag and honours SIGTERM)


def _closed_port() -> int:
  return cluster_lib.free_ports(1)[0]


def _tf_config(workers, index=0, **jobs) -> dict:
  return {**os.environ, "TF_CONFIG": json.dumps({
      "cluster": {"worker": workers, **jobs},
      "task": {"type": "chief" if "chief" in jobs else "worker", "index": index}})}


def _stage_argv(world_dir, model_dir, *flags) -> List[str]:
  return _python("stages.fine", f"--world_dir={world_dir}", f"--model_dir={model_dir}",
                 "--hidden_units=8", "--embedding_dim=4", *flags)


def _run_bounded(argv, env, limit: float = 120) -> subprocess.CompletedProcess:
  done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=limit)
  return done


@pytest.mark.slow
def test_multi_worker_with_an_unreachable_peer_gives_up_after_cluster_timeout(tiny_world_dir,
                                                                              tmp_path):
  """22.10: one line naming the peer and --cluster_timeout; nothing written."""
  own, peer = cluster_lib.free_ports(2)
  env = _tf_config([f"127.0.0.1:{own}", f"127.0.0.1:{peer}"])
  started = time.monotonic()
  done = _run_bounded(_stage_argv(tiny_world_dir, tmp_path / "models",
                                  "--strategy=multi_worker", "--cluster_timeout=3"), env)
  assert done.returncode == 2, done.stderr[-2000:]
  assert f"127.0.0.1:{peer} not reachable after 3s (--cluster_timeout)" in done.stderr
  assert "Traceback" not in done.stderr
  assert time.monotonic() - started < 90
  assert not os.path.exists(tmp_path / "models")


@pytest.mark.slow
def test_a_parameter_server_chief_with_unreachable_servers_gives_up(tiny_world_dir, tmp_path):
  """22.10: the chief of a parameter-server cluster whose workers and ps never came up."""
  chief, worker, ps = cluster_lib.free_ports(3)
  env = _tf_config([f"127.0.0.1:{worker}"], chief=[f"127.0.0.1:{chief}"],
                   ps=[f"127.0.0.1:{ps}"])
  done = _run_bounded(_stage_argv(tiny_world_dir, tmp_path / "models",
                                  "--strategy=parameter_server", "--validation_fraction=0",
                                  "--cluster_timeout=3"), env)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "not reachable after 3s (--cluster_timeout)" in done.stderr
  assert "Traceback" not in done.stderr


def _terminate_while_waiting(argv, env, ready: str, tmp_path) -> int:
  """Starts `argv`, sends SIGTERM once its stderr shows `ready`; its exit status (it must end
  within 30 s of the signal)."""
  log = open(tmp_path / "stderr.log", "w+")
  process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
  try:
    deadline = time.monotonic() + 120
    while ready not in open(tmp_path / "stderr.log").read():
      assert process.poll() is None, open(tmp_path / "stderr.log").read()[-2000:]
      assert time.monotonic() < deadline, "never reached the wait"
      time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
    log.close()


@pytest.mark.slow
def test_sigterm_ends_a_task_waiting_for_its_cluster(tiny_world_dir, tmp_path):
  """22.10: it used to ignore SIGTERM (TensorFlow swallows it while it connects)."""
  own, peer = cluster_lib.free_ports(2)
  env = _tf_config([f"127.0.0.1:{own}", f"127.0.0.1:{peer}"])
  code = _terminate_while_waiting(
      _stage_argv(tiny_world_dir, tmp_path / "models", "--strategy=multi_worker"), env,
      "waiting for the cluster's other tasks", tmp_path)
  assert code == -signal.SIGTERM


def _ray_env(tmp_path) -> dict:
  # Ray finds a cluster for --ray_address=auto under its temp dir: keep it empty.
  return {**os.environ, "TMPDIR": str(tmp_path), "RAY_ADDRESS": ""}


@pytest.mark.slow
@pytest.mark.parametrize("address", ["ray://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_an_unreachable_ray_address_gives_up_after_ray_timeout(tmp_path, address):
  """22.11 and 22.15: Ray retried for ever; now one line naming --ray_timeout."""
  address = address.format(port=_closed_port())
  done = _run_bounded(_python("data.generate", f"--world_dir={tmp_path}/w", "--preset=tiny",
                              "--runner=ray", f"--ray_address={address}", "--ray_timeout=3"),
                      _ray_env(tmp_path))
  assert done.returncode == 2, done.stderr[-2000:]
  assert f"--ray_address={address}" in done.stderr and "--ray_timeout" in done.stderr
  assert "Traceback" not in done.stderr
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.slow
def test_ray_address_auto_without_a_cluster_is_one_line(tmp_path):
  """22.15: a ConnectionError traceback before."""
  done = _run_bounded(_python("data.generate", f"--world_dir={tmp_path}/w", "--preset=tiny",
                              "--runner=ray", "--ray_address=auto"), _ray_env(tmp_path))
  assert done.returncode == 2, done.stderr[-2000:]
  assert "--ray_address=auto: cannot join a Ray cluster there" in done.stderr
  assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_sigterm_ends_a_command_waiting_for_a_ray_cluster(tmp_path):
  """22.11: it used to ignore SIGTERM while Ray retried the address."""
  code = _terminate_while_waiting(
      _python("data.generate", f"--world_dir={tmp_path}/w", "--preset=tiny", "--runner=ray",
              f"--ray_address=127.0.0.1:{_closed_port()}", "--ray_timeout=600"),
      _ray_env(tmp_path), "Connecting to existing Ray cluster", tmp_path)
  assert code == -signal.SIGTERM


@pytest.mark.slow
def test_sigterm_to_experiments_cluster_stops_every_task_it_started(tmp_path):
  """A killed launcher took its tasks with it only by chance; now SIGTERM stops them."""
  pids = tmp_path / "pids"
  task = (f"import os, time; open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); "
          "time.sleep(120)")
  argv = _python("experiments.cluster", "--workers=2", f"--task_logs={tmp_path}/logs", "--",
                 sys.executable, "-c", task)
  process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    deadline = time.monotonic() + 120
    while not (pids.exists() and len(pids.read_text().split()) == 2):
      assert process.poll() is None and time.monotonic() < deadline
      time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
    process.stderr.close()
  for pid in map(int, pids.read_text().split()):
    with pytest.raises(ProcessLookupError):
      for _ in range(100):  # reaped by the launcher's wait; give the kernel a moment
        os.kill(pid, 0)
        time.sleep(0.1)
