"""data.plumbing.engine: tasks here or on Ray give the same worlds, replays and study tables.

One local Ray instance (2 CPUs) serves the whole module. Generation runs in the fast tier;
the replay and the paper study need trained models and run in the slow tier.
"""

import os

import pandas as pd
import pytest

import data
from data import generate
from data.plumbing import command
from data.plumbing import engine as engine_lib
from tests.test_world_helpers import world_files

RAY = engine_lib.EngineConfig(runner="ray", ray_num_cpus=2)


@pytest.fixture(scope="module")
def ray_engine():
  """A Ray engine on one local instance shared by the module's tests (started once)."""
  ray = pytest.importorskip("ray")
  engine_lib.start_ray(RAY)
  try:
    with engine_lib.Engine(RAY) as engine:
      yield engine
  finally:
    ray.shutdown()


def square_or_fail(offset: int, item: int) -> int:
  """A task for the tests: offset + item squared; refuses 3 (a worker imports it by name)."""
  if item == 3:
    raise command.UserError("three is not allowed")
  return offset + item * item


def worker_env(name: str):
  """A task for the tests: the worker's own environment variable `name`, and its pid."""
  return os.environ.get(name), os.getpid()


def test_local_engine_runs_in_this_process_in_dependency_order():
  seen = []
  engine = engine_lib.Engine()
  results = engine.map(square_or_fail, [0, 1, 2], label=str, common=(10,), after=[[2], [], []],
                       done=lambda i, r: seen.append(i))
  assert results == [10, 11, 14] and seen == [1, 2, 0]
  with pytest.raises(ValueError, match="cycle"):
    engine.map(square_or_fail, [0, 1], label=str, common=(0,), after=[[1], [0]])


def test_engine_config_refuses_an_unknown_runner():
  with pytest.raises(command.UserError, match="--runner"):
    engine_lib.EngineConfig(runner="beam")


def test_ray_map_keeps_the_order_and_names_the_failed_task(ray_engine):
  assert ray_engine.parallelism() == 2
  items = [4, 0, 2, 1]
  assert ray_engine.map(square_or_fail, items, label=str, common=(1,),
                        after=[[], [0], [], [1, 2]]) == [17, 1, 5, 2]
  with pytest.raises(command.UserError, match=r"^item 3: three is not allowed$"):
    ray_engine.map(square_or_fail, [1, 3], label=lambda i: f"item {i}", common=(0,))


def test_project_root_is_the_checkout_holding_every_package():
  for package in ("data", "models", "stages", "experiments"):
    assert os.path.isfile(os.path.join(engine_lib.PROJECT_ROOT, package, "__init__.py"))


def test_ray_workers_get_the_project_and_the_keras_switch(ray_engine):
  (keras, pid), (path, _) = ray_engine.map(worker_env, ["TF_USE_LEGACY_KERAS", "PYTHONPATH"],
                                            label=str)
  assert pid != os.getpid() and keras == "1"
  assert path.split(os.pathsep)[0] == engine_lib.PROJECT_ROOT


def test_a_world_generated_on_ray_is_byte_identical_to_the_local_one(ray_engine, tmp_path):
  config = data.preset("tiny", n_user_shards=3)
  local = str(tmp_path / "local")
  on_ray = str(tmp_path / "ray")
  local_manifest = generate.generate(local, config)
  ray_manifest = generate.generate(on_ray, config, engine=ray_engine)
  assert ray_manifest["world_hash"] == local_manifest["world_hash"]
  assert world_files(on_ray) == world_files(local)
  assert len([f for f in world_files(local) if f.startswith("logs/day=01/")]) == 3


def test_a_failed_shard_is_named_in_one_line(ray_engine, tmp_path):
  config = data.preset("tiny", n_user_shards=2)
  blocker = tmp_path / "world" / generate.SHARDS_DIR
  blocker.parent.mkdir()
  blocker.write_text("a file where the shards' directory goes")
  with pytest.raises(command.UserError, match=r"^shard [01]: .*_shards"):
    generate.generate(str(tmp_path / "world"), config, engine=ray_engine)


# --------------------------------------------------------------------------------- the replay

TINY = dict(hidden_units=(16,), embedding_dim=4, batch_size=512, epochs=1, max_steps=20,
            checkpoint_every=1000)
REPLAY = dict(day=4, max_requests=300, batch_requests=50, cascade_sample=40,
              coarse_variant="baseline", cvr_variant="baseline")
TIMING_PREFIXES = ("latency/", "throughput/")


@pytest.fixture(scope="module")
def model_dir(tiny_world_dir, tmp_path_factory):
  """The four baseline exports a funnel needs, trained on days 1-3 of the tiny world."""
  from stages import coarse
  from stages import config as config_lib
  from stages import fine
  from stages import retrieval
  path = str(tmp_path_factory.mktemp("engine_models"))
  common = dict(world_dir=tiny_world_dir, model_dir=path, **TINY)
  retrieval.train(config_lib.RetrievalConfig(export_k=300, **common))
  fine.train(config_lib.FineConfig(task="ctr", **common))
  fine.train(config_lib.FineConfig(task="cvr", **common))
  coarse.train(config_lib.CoarseConfig(**common))
  return path


@pytest.mark.slow
def test_a_replay_on_ray_equals_the_local_one_but_for_timings(ray_engine, tiny_world_dir,
                                                              model_dir, tmp_path):
  from experiments import funnel as funnel_lib
  from experiments import replay as replay_lib
  from experiments import run_dir as run_dir_lib
  world = data.load(tiny_world_dir, verify="size")
  funnel = funnel_lib.Funnel(retrieval=200, coarse=50, page=10)
  summaries, cache = {}, str(tmp_path / "cache")
  for name, engine in (("local", None), ("ray", ray_engine)):
    config = replay_lib.ReplayConfig(world_dir=tiny_world_dir, model_dir=model_dir,
                                     run_dir=str(tmp_path / name), oracle_cache_dir=cache + name,
                                     **REPLAY)
    summaries[name] = replay_lib.replay(world, funnel, config, engine)
  local, on_ray = summaries["local"], summaries["ray"]
  for summary in (local, on_ray):
    summary["metrics"] = {k: v for k, v in summary["metrics"].items()
                          if not k.startswith(TIMING_PREFIXES)}
    for path in ("run_dir", "oracle_cache_dir"):
      summary["config"].pop(path)
  assert on_ray == local
  assert local["metrics"]["n_requests"] == 300
  frames = [pd.read_parquet(tmp_path / name / run_dir_lib.PER_REQUEST) for name in ("local", "ray")]
  pd.testing.assert_frame_equal(frames[1], frames[0])
  # The workers' oracle pages reached the driver's cache: one file, every request.
  import numpy as np
  with np.load(os.path.join(cache + "ray", os.listdir(cache + "ray")[0])) as cached:
    assert len(cached["request_ids"]) == 300


# ---------------------------------------------------------------------------- the paper study

PAPER_TRAINING = dict(hidden_units=(16,), embedding_dim=4, batch_size=1024, max_steps=20)
TIMING_COLUMNS = ("train_seconds", "seconds", "examples_per_second")


def _paper_runs(work_dir: str, engine):
  """The study's fine CTR baseline and the CVR baseline that reads it (its CTCVR), run by
  experiments.paper.run_trials on a tiny world: the trials' frame and the runs' metrics files."""
  from experiments import paper
  from experiments import paper_worlds
  from stages import config as config_lib
  from stages import driver
  world_dir = paper_worlds.ensure_world("tiny", work_dir, paper_worlds.MAIN, 0, {})
  training = config_lib.TrainConfig(world_dir=world_dir, model_dir=work_dir, **PAPER_TRAINING)
  base = driver.resolve(training, data.open_world(training.world_dir))
  from experiments import studies
  trials = [studies.Trial("cvr", "fine_ctr", "baseline", 0, (1, 2, 3)),
            studies.Trial("cvr", "fine_cvr", "baseline", 0, (1, 2, 3))]
  frame = paper.run_trials(trials, base, work_dir, max_worker_gb=0.5, engine=engine)
  finished = {os.path.relpath(str(p), work_dir): p.stat().st_mtime_ns
              for p in __import__("pathlib").Path(work_dir).rglob("metrics.json")}
  return frame.drop(columns=[c for c in frame.columns if any(t in c for t in TIMING_COLUMNS)]), \
      finished


@pytest.mark.slow
def test_paper_trials_on_ray_give_the_local_tables_and_receipts_the_local_runner_reuses(
    ray_engine, tmp_path):
  local, _ = _paper_runs(str(tmp_path / "local"), None)
  on_ray, finished = _paper_runs(str(tmp_path / "ray"), ray_engine)
  assert len(local) == 2 and local["auc"].notna().all()
  pd.testing.assert_frame_equal(on_ray, local)
  # The Ray tasks' receipts are the local runner's: a local rerun trains nothing.
  again, unchanged = _paper_runs(str(tmp_path / "ray"), None)
  assert unchanged == finished and len(finished) == 2
  pd.testing.assert_frame_equal(again, local)


def test_a_failed_trial_on_ray_is_named_with_the_childs_error(ray_engine, tmp_path):
  from experiments import runner
  from stages import config as config_lib
  bad = config_lib.FineConfig(world_dir=str(tmp_path / "no_world"), model_dir=str(tmp_path))
  with pytest.raises(command.UserError,
                     match=r"(?s)^stages\.fine --variant=baseline --seed=0 --model_dir=.*no world"):
    runner.run_stages([bad], [[]], engine=ray_engine)
