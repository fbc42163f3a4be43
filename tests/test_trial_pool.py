"""experiments.trial_pool: long-lived workers run stage jobs as the commands would, one line
per failure, and do not outlive their parent."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from data.plumbing import command
from experiments import jobs
from experiments import runner
from experiments import trial_pool
from stages import catalogue
from stages import config as config_lib

SMALL = dict(max_steps=20, hidden_units=(16,), embedding_dim=4)


def _base(world_dir, model_dir):
  return config_lib.TrainConfig(world_dir=world_dir, model_dir=str(model_dir), **SMALL)


@pytest.mark.slow
def test_a_job_in_a_worker_that_ran_others_gives_the_metrics_of_a_fresh_process(
    tiny_world_dir, tmp_path):
  warm = _base(tiny_world_dir, tmp_path / "warm")
  with trial_pool.WorkerPool(max_jobs=10) as pool:
    runner.run_stage(catalogue.FINE_CTR.make_config(warm), pool)
    runner.run_stage(jobs.Job(catalogue.COARSE.make_config(warm), reference=True), pool)
    after_others = runner.run_stage(catalogue.COARSE.make_config(warm, variant="pfd"), pool)
  fresh = runner.run_stage(catalogue.COARSE.make_config(_base(tiny_world_dir, tmp_path / "fresh"),
                                                        variant="pfd"))
  for key in ("auc", "gauc", "logloss", "eauc", "teacher_auc", "config_key", "n_train"):
    assert after_others[key] == fresh[key], key


def test_a_users_error_is_one_line_and_the_worker_serves_the_next_job(tmp_path):
  missing = catalogue.FINE_CTR.make_config(_base(str(tmp_path / "nowhere"), tmp_path / "m"))
  with trial_pool.WorkerPool(max_jobs=10) as pool:
    for _ in range(2):
      with pytest.raises(command.UserError, match="no world at .*nowhere"):
        pool.run(jobs.Job(missing).to_json(), "stages.fine")
    assert len(pool._idle) == 1  # the same worker, kept: an expected error is not a crash


def test_a_worker_that_dies_is_reported_and_replaced(tmp_path):
  with trial_pool.WorkerPool(max_jobs=10) as pool:
    worker = pool._take()
    worker.process.kill()
    reply = worker.run({"stage": "fine_ctr", "config": {}})
    assert not reply["ok"] and "died" in reply["error"]
    worker.close()


@pytest.mark.slow
def test_workers_end_with_a_killed_parent(tiny_world_dir, tmp_path):
  """A study SIGKILLed mid-job leaves no worker behind (holding the stage's lock)."""
  script = textwrap.dedent(f"""
      import os, sys
      from experiments import runner, trial_pool
      from stages import catalogue, config as config_lib
      base = config_lib.TrainConfig(world_dir={tiny_world_dir!r}, model_dir={str(tmp_path)!r},
                                    hidden_units=(16,), embedding_dim=4, epochs=50)
      pool = trial_pool.WorkerPool()
      worker = pool._take()
      pool._idle.append(worker)  # the job below runs in it
      print(worker.process.pid, flush=True)
      runner.run_stage(catalogue.FINE_CTR.make_config(base), pool)
  """)
  parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
  worker_pid = int(parent.stdout.readline())
  time.sleep(15)  # the job is training
  parent.send_signal(signal.SIGKILL)
  parent.wait()
  deadline = time.time() + 30
  while time.time() < deadline and _alive(worker_pid):
    time.sleep(0.5)
  assert not _alive(worker_pid)


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split()[2] != "Z"
  except FileNotFoundError:
    return False
