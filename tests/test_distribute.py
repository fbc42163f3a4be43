"""Training on tf.distribute: TF_CONFIG, input shards, and the strategies on the tiny world.

The strategy tests run in child processes (a logical-device split, a multi-worker strategy
and a cluster's servers would otherwise outlive the test in this process) and are marked slow.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import data
from experiments import cluster
from experiments import funnel as funnel_lib
from experiments import replay as replay_lib
from experiments import runner
from models import distribute
from models import export
from stages import config as config_lib
from stages import distribute as distribute_lib
from stages import fine
from stages import layout
from stages import retrieval
from stages import training

TINY = dict(hidden_units=(16,), embedding_dim=4, batch_size=512, checkpoint_every=10,
            min_validation_positives=10)
FLAGS = ["--hidden_units=16", "--embedding_dim=4", "--batch_size=512", "--checkpoint_every=10",
         "--min_validation_positives=10"]
COMPARED = ("auc", "gauc", "logloss", "teacher_auc", "eauc")


def _tf_config(cluster_spec, job, index):
  return {"TF_CONFIG": json.dumps({"cluster": cluster_spec, "task": {"type": job,
                                                                     "index": index}})}


# ----------------------------------------------------------------------------- no training


def test_tf_config_is_read_as_tensorflow_reads_it():
  workers = {"worker": ["h:1", "h:2"]}
  assert distribute.cluster_task({}).is_chief  # no TF_CONFIG: a single process
  assert distribute.cluster_task(_tf_config(workers, "worker", 0)).is_chief
  assert not distribute.cluster_task(_tf_config(workers, "worker", 1)).is_chief
  ps = {"chief": ["h:0"], "worker": ["h:1"], "ps": ["h:2", "h:3"]}
  assert distribute.cluster_task(_tf_config(ps, "chief", 0)).is_chief
  assert not distribute.cluster_task(_tf_config(ps, "worker", 0)).is_chief
  assert distribute.cluster_task(_tf_config(ps, "ps", 1)).count("ps") == 2
  with pytest.raises(distribute.ClusterError, match="not in its cluster"):
    distribute.cluster_task(_tf_config(workers, "worker", 2))
  with pytest.raises(distribute.ClusterError, match="not valid JSON"):
    distribute.cluster_task({"TF_CONFIG": "{nope"})


@pytest.mark.parametrize("strategy,environ,message", [
    ("multi_worker", {}, "TF_CONFIG, which is not set"),
    ("parameter_server", {}, "TF_CONFIG, which is not set"),
    ("multi_worker", _tf_config({"chief": ["h:0"], "worker": ["h:1"], "ps": ["h:2"]},
                                "chief", 0), "needs `worker`"),
    ("parameter_server", _tf_config({"worker": ["h:1", "h:2"]}, "worker", 0),
     "needs one `chief`"),
])
def test_a_cluster_strategy_refuses_a_tf_config_it_cannot_run(strategy, environ, message):
  with pytest.raises(distribute.ClusterError, match=message):
    distribute.check_cluster(strategy, distribute.cluster_task(environ))
  distribute.check_cluster("mirrored", distribute.cluster_task(environ))  # needs none


def test_strategy_is_a_flag_outside_the_reuse_key_but_asynchronous_updates_are_in_it():
  base = dict(world_dir="W", model_dir="M", task="cvr", variant="pfd")
  configs = {name: config_lib.FineConfig(strategy=name, validation_fraction=0.0, **base)
             for name in distribute.STRATEGIES}
  keys = {name: layout.config_key(c, {}) for name, c in configs.items()}
  assert keys["default"] == keys["mirrored"] == keys["multi_worker"] != keys["parameter_server"]
  with pytest.raises(config_lib.StageError, match="--validation_fraction=0"):
    config_lib.FineConfig(strategy="parameter_server", **base)
  with pytest.raises(config_lib.StageError, match="--strategy=gpu"):
    config_lib.FineConfig(strategy="gpu", **base)
  # A study's children would all claim one cluster task.
  with pytest.raises(config_lib.StageError, match="run the stage commands on the cluster"):
    runner.run_stage(configs["multi_worker"])


def test_only_embedding_tables_are_split_across_parameter_servers():
  partitioner = distribute.TablePartitioner(max_shards=2, min_shard_bytes=1024)
  big, small = tf.TensorShape([1000, 16]), tf.TensorShape([10, 16])
  assert partitioner(big, tf.float32) == [1, 1]  # a dense kernel stays whole
  with distribute.embedding_tables():
    assert partitioner(big, tf.float32) == [2, 1]
    assert partitioner(small, tf.float32) == [1, 1]  # smaller than one shard


def test_replicas_take_their_shares_of_the_same_global_batches():
  arrays = {"x": np.arange(1000, dtype=np.int64)}

  def batches(replicas, count):
    dataset, _ = training.resumable_dataset(arrays, 64, seed=3, start_step=lambda: 5,
                                            replicas=replicas)
    return [b["x"].numpy() for b, _ in zip(dataset, range(count))]

  whole = batches((0, 1, 1), 20)
  two_local = batches((0, 2, 2), 40)  # one pipeline, two replicas (mirrored)
  worker = [batches((i, 1, 2), 20) for i in range(2)]  # one pipeline per worker
  for step, batch in enumerate(whole):
    assert np.array_equal(np.concatenate(two_local[2 * step:2 * step + 2]), batch)
    assert np.array_equal(np.concatenate([worker[0][step], worker[1][step]]), batch)
    assert abs(len(worker[0][step]) - len(worker[1][step])) <= 1


def test_the_launcher_gives_each_task_its_tf_config(tmp_path):
  show = "import json, os; print(os.environ['TF_CONFIG'])"
  run = cluster.launch([sys.executable, "-c", show], workers=2, log_dir=str(tmp_path))
  assert run.ok and json.loads(run.output)["task"] == {"type": "worker", "index": 0}
  assert set(run.cluster) == {"worker"} and len(set(run.cluster["worker"])) == 2
  spec = cluster.cluster_spec(workers=2, ps=1)
  assert {job: len(tasks) for job, tasks in spec.items()} == {"chief": 1, "worker": 2, "ps": 1}
  failing = cluster.launch([sys.executable, "-c", "import sys; sys.exit(3)"], workers=2,
                           log_dir=str(tmp_path / "failing"))
  assert not failing.ok and 3 in failing.returncodes.values()


# ----------------------------------------------------------------------------- mirrored

MIRRORED_CHILD = """
import json, sys
import models
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from stages import coarse
from stages import config as config_lib
world_dir, model_root, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
results = {}
for strategy in ("default", "mirrored"):
  config = config_lib.CoarseConfig(world_dir=world_dir, model_dir=f"{model_root}/{strategy}",
                                   strategy=strategy, **settings)
  results[strategy] = coarse.train(config)
print(json.dumps(results))
"""


def _child(args, timeout=900):
  result = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True,
                          timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mirrored_over_two_cpu_devices_gives_the_default_strategys_metrics(tiny_world_dir,
                                                                          tmp_path):
  settings = dict(TINY, hidden_units=[16], variant="pfd", max_steps=30, validate_every=10)
  results = _child([MIRRORED_CHILD, tiny_world_dir, str(tmp_path), json.dumps(settings)])
  default, mirrored = results["default"], results["mirrored"]
  assert mirrored["strategy"] == "mirrored" and mirrored["replicas"] == 2
  assert default["strategy"] == "default" and "replicas" not in default
  # Same global batches, gradients summed over the halves, batch norm over the whole batch:
  # the same model up to float summation order (measured: ~1e-7).
  for key in COMPARED:
    assert mirrored[key] == pytest.approx(default[key], abs=1e-4), key
  curves = [[(p["step"], p["auc"]) for p in r["learning_curve"]] for r in (default, mirrored)]
  assert [s for s, _ in curves[0]] == [s for s, _ in curves[1]] and len(curves[0]) >= 3
  np.testing.assert_allclose([a for _, a in curves[1]], [a for _, a in curves[0]], atol=1e-4)
  assert mirrored["config_key"] == default["config_key"]


# ----------------------------------------------------------------------------- multi_worker

FUNNEL = funnel_lib.Funnel(retrieval=200, coarse=50, page=10)
REPLAY = dict(day=4, max_requests=120, batch_requests=60, cascade_sample=30)


@pytest.fixture(scope="module")
def funnel_models(tiny_world_dir, tmp_path_factory):
  """Retrieval, fine CTR and fine CVR exports (default strategy): the replay's other stages."""
  path = str(tmp_path_factory.mktemp("distribute_models"))
  common = dict(TINY, world_dir=tiny_world_dir, model_dir=path, max_steps=20)
  retrieval.train(config_lib.RetrievalConfig(export_k=300, **common))
  fine.train(config_lib.FineConfig(task="ctr", **common))
  fine.train(config_lib.FineConfig(task="cvr", variant="pfd", **common))
  return path


@pytest.mark.slow
def test_multi_worker_trains_coarse_pfd_and_the_replay_serves_its_export(
    tiny_world_dir, funnel_models, tmp_path):
  args = ["--variant=pfd", "--max_steps=20", f"--world_dir={tiny_world_dir}", *FLAGS]
  run = cluster.launch([sys.executable, "-m", "stages.coarse", "--strategy=multi_worker",
                        f"--model_dir={funnel_models}", *args], workers=2, timeout=900,
                       log_dir=str(tmp_path / "logs"))
  assert run.ok, cluster.describe_failure(run)
  metrics = json.loads(run.output)
  assert metrics["strategy"] == "multi_worker" and metrics["replicas"] == 2
  with open(tmp_path / "logs" / "worker1.out") as f:
    assert json.loads(f.read()) == {"cluster": {"worker": 2}, "exported": False, "replicas": 2,
                                    "strategy": "multi_worker", "task": "worker:1"}
  out_dir = layout.stage_dir(funnel_models, "coarse", "pfd")
  assert not [n for n in os.listdir(os.path.join(out_dir, "checkpoints")) if "worker" in n]
  # Each worker took its half of every global batch: one process's model, to float rounding.
  single = subprocess.run([sys.executable, "-m", "stages.coarse",
                           f"--model_dir={tmp_path / 'single'}", *args], capture_output=True,
                          text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  for key in COMPARED:
    assert metrics[key] == pytest.approx(json.loads(single.stdout)[key], abs=1e-4), key
  # The chief's export alone serves the funnel's coarse stage.
  world = data.load(tiny_world_dir)
  summary = replay_lib.replay(world, FUNNEL, replay_lib.ReplayConfig(
      world_dir=tiny_world_dir, model_dir=funnel_models, run_dir=str(tmp_path / "replay"),
      coarse_variant="pfd", **REPLAY))
  assert summary["models"]["coarse"]["variant"] == "pfd"
  assert summary["metrics"]["n_requests"] == REPLAY["max_requests"]
  assert summary["metrics"]["offline/coarse_auc"] == pytest.approx(metrics["auc"], abs=1e-4)


# ----------------------------------------------------------------------------- parameter_server


@pytest.mark.slow
def test_parameter_server_splits_the_tables_and_its_export_serves_alone(tiny_world_dir,
                                                                        tmp_path):
  model_dir = str(tmp_path / "models")
  run = cluster.launch([sys.executable, "-m", "stages.fine", "--task=cvr", "--variant=pfd",
                        "--strategy=parameter_server", "--validation_fraction=0",
                        "--ps_shard_bytes=1024", "--max_steps=12", "--batch_size=128",
                        f"--world_dir={tiny_world_dir}", f"--model_dir={model_dir}",
                        *FLAGS[:2], "--checkpoint_every=5"],
                       workers=2, ps=2, timeout=900, log_dir=str(tmp_path / "logs"))
  assert run.ok, cluster.describe_failure(run)
  metrics = json.loads(run.output)
  assert metrics["strategy"] == "parameter_server" and metrics["asynchronous"] is True
  assert metrics["cluster"] == {"chief": 1, "worker": 2, "ps": 2}
  # Each large table (the student's and the teacher's own user_id among them) has one shard on
  # each parameter server; nothing else was split.
  shards = metrics["table_shards"]
  assert {"embeddings/user_id", "teacher_private_embeddings/user_id"} <= set(shards)
  for devices in shards.values():
    assert sorted(d.split("/device")[0] for d in devices) == [
        "/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"]
  assert not os.path.exists(os.path.join(layout.stage_dir(model_dir, "fine/cvr", "pfd"),
                                         "checkpoints", distribute_lib.INPUT_DIR))
  # The export is whole and local: this process, with no cluster, loads and scores with it.
  path = layout.export_path(model_dir, "fine/cvr", "pfd")
  world = data.load(tiny_world_dir)
  assert "serving_default" in export.load_saved_model(path).signatures
  shapes = [shape for _, shape in tf.train.list_variables(os.path.join(path, "variables",
                                                                       "variables"))]
  for table in ("user_id", "item_id"):
    assert [world.schema[table].vocab_size + 1, 4] in shapes, table  # whole, one variable
  rows = world.log_arrays([4])
  scores = export.load_serving(path).predict({k: rows[k][:256] for k in rows})
  assert scores.shape == (256,) and np.all((scores > 0) & (scores < 1))


# ----------------------------------------------------------------------------- resume

MIRRORED_RESUME_CHILD = """
import json, sys
import models
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from models import testing
from stages import coarse
from stages import config as config_lib
world_dir, model_root, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def config(name, **extra):
  return config_lib.CoarseConfig(world_dir=world_dir, model_dir=f"{model_root}/{name}",
                                 strategy="mirrored", **settings, **extra)
try:
  coarse.train(config("killed", callbacks=[testing.KillAtStep(15)]))
  raise SystemExit("the kill at step 15 did not happen")
except testing.Killed:
  pass
counter = testing.CountSteps()
results = {"resumed": coarse.train(config("killed", callbacks=[counter])),
           "whole": coarse.train(config("whole")), "resumed_steps": counter.steps}
print(json.dumps(results))
"""


def _without_time(metrics):
  return {k: v for k, v in metrics.items()
          if k not in ("train_seconds", "timed_seconds", "timed_steps", "examples_per_second")}


@pytest.mark.slow
def test_a_killed_mirrored_run_resumes_to_the_uninterrupted_model(tiny_world_dir, tmp_path):
  settings = dict(TINY, hidden_units=[16], variant="pfd", max_steps=30, validate_every=10)
  results = _child([MIRRORED_RESUME_CHILD, tiny_world_dir, str(tmp_path), json.dumps(settings)])
  assert results["resumed_steps"] == 30 - 10  # from the step-10 backup, not from scratch
  assert _without_time(results["resumed"]) == _without_time(results["whole"])


def _kill_cluster_when(argv, ready, log_dir, timeout=600.0):
  """Starts a local cluster (`experiments.cluster`) in its own process group and SIGKILLs the
  whole group, launcher and tasks, once `ready()` holds: a machine failure, not a clean stop."""
  os.makedirs(log_dir, exist_ok=True)
  with open(os.path.join(log_dir, "launcher.err"), "w") as err:
    process = subprocess.Popen([sys.executable, "-m", "experiments.cluster",
                                f"--task_logs={log_dir}", *argv], stdout=subprocess.DEVNULL,
                               stderr=err, start_new_session=True)
  deadline = time.monotonic() + timeout
  try:
    while not ready():
      if process.poll() is not None:
        with open(os.path.join(log_dir, "launcher.err")) as f:
          pytest.fail(f"the cluster ended (rc {process.returncode}) before the kill point: "
                      f"{f.read()[-3000:]}")
      assert time.monotonic() < deadline, f"no kill point within {timeout}s"
      time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
  finally:
    process.wait()


def _backup_written(stage_dir):
  backup = os.path.join(stage_dir, "checkpoints", "backup")
  return lambda: os.path.isdir(backup) and any(
      name.startswith("ckpt") for _, _, names in os.walk(backup) for name in names)


@pytest.mark.slow
def test_a_killed_multi_worker_cluster_resumes_to_the_one_process_model(tiny_world_dir,
                                                                        tmp_path):
  args = ["--variant=pfd", "--max_steps=40", "--validation_fraction=0",
          f"--world_dir={tiny_world_dir}", *FLAGS]
  argv = [sys.executable, "-m", "stages.coarse", "--strategy=multi_worker",
          f"--model_dir={tmp_path / 'killed'}", *args]
  stage_dir = layout.stage_dir(str(tmp_path / "killed"), "coarse", "pfd")
  _kill_cluster_when(["--workers=2", "--", *argv], _backup_written(stage_dir),
                     str(tmp_path / "killed_logs"))
  assert not os.path.exists(os.path.join(stage_dir, "metrics.json"))
  run = cluster.launch(argv, workers=2, timeout=900, log_dir=str(tmp_path / "logs"))
  assert run.ok, cluster.describe_failure(run)
  with open(tmp_path / "logs" / "worker0.err") as f:
    assert "resuming from the training state" in f.read()
  single = subprocess.run([sys.executable, "-m", "stages.coarse",
                           f"--model_dir={tmp_path / 'single'}", *args], capture_output=True,
                          text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  metrics, expected = json.loads(run.output), json.loads(single.stdout)
  for key in ("auc", "gauc", "logloss", "teacher_auc"):
    assert metrics[key] == pytest.approx(expected[key], abs=1e-4), key


@pytest.mark.slow
def test_a_killed_parameter_server_chief_resumes_and_finishes(tiny_world_dir, tmp_path):
  model_dir = str(tmp_path / "models")
  argv = [sys.executable, "-m", "stages.fine", "--task=cvr", "--variant=pfd",
          "--strategy=parameter_server", "--validation_fraction=0", "--max_steps=24",
          "--batch_size=128", f"--world_dir={tiny_world_dir}", f"--model_dir={model_dir}",
          *FLAGS[:2], "--checkpoint_every=5"]
  stage_dir = layout.stage_dir(model_dir, "fine/cvr", "pfd")
  _kill_cluster_when(["--workers=2", "--ps=1", "--", *argv], _backup_written(stage_dir),
                     str(tmp_path / "killed_logs"))
  assert not os.path.exists(os.path.join(stage_dir, "metrics.json"))
  run = cluster.launch(argv, workers=2, ps=1, timeout=900, log_dir=str(tmp_path / "logs"))
  assert run.ok, cluster.describe_failure(run)
  with open(tmp_path / "logs" / "chief0.err") as f:
    assert "resuming from the training state" in f.read()
  metrics = json.loads(run.output)
  assert metrics["strategy"] == "parameter_server" and metrics["cluster"]["ps"] == 1
  assert os.path.exists(os.path.join(layout.export_path(model_dir, "fine/cvr", "pfd"),
                                     "saved_model.pb"))
