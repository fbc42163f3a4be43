"""experiments.replay on the tiny world: contract, oracle optimality, refusals, resume, compare.

The tests that replay need five trained tiny models (~60-80 s on two shared cores, most of it
TensorFlow tracing and SavedModel export), so they are marked slow; the oracle's best-page
search and the flag parsing need only the world and run in the fast set.
"""

import json
import os
import shutil

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pandas as pd
import pytest

import data
from data.plumbing import command
from data.world import best_page as best_page_lib
from experiments import compare
from experiments import funnel as funnel_lib
from experiments import replay as replay_lib
from experiments import request_table
from experiments import run_dir as run_dir_lib
from stages import coarse
from stages import config as config_lib
from stages import fine
from stages import retrieval

FLAGS = flags.FLAGS
TINY = dict(hidden_units=(32, 16), embedding_dim=8, batch_size=512, epochs=1,
            checkpoint_every=1000)
FUNNEL = funnel_lib.Funnel(retrieval=200, coarse=50, page=10)
REPLAY = dict(day=4, max_requests=240, batch_requests=100, cascade_sample=60)
SPEED_PREFIXES = ("latency/", "throughput/")


def _stage_config(config_class, world_dir, model_dir, **overrides):
  return config_class(world_dir=world_dir, model_dir=model_dir, **{**TINY, **overrides})


@pytest.fixture(scope="module")
def model_dir(tiny_world_dir, tmp_path_factory):
  """Every export a funnel needs, trained on days 1-3 of the tiny world (tiny widths)."""
  path = str(tmp_path_factory.mktemp("replay_models"))
  retrieval.train(_stage_config(config_lib.RetrievalConfig, tiny_world_dir, path,
                                export_k=300))
  fine.train(_stage_config(config_lib.FineConfig, tiny_world_dir, path, task="ctr"))
  fine.train(_stage_config(config_lib.FineConfig, tiny_world_dir, path, variant="pfd",
                           task="cvr"))
  for variant in ("baseline", "pfd_md"):
    coarse.train(_stage_config(config_lib.CoarseConfig, tiny_world_dir, path, variant=variant,
                               teacher_variant="baseline"))
  return path


@pytest.fixture(scope="module")
def world(tiny_world_dir):
  return data.load(tiny_world_dir, verify="size")


def _config(world, model_dir, run_dir, **overrides) -> replay_lib.ReplayConfig:
  return replay_lib.ReplayConfig(world_dir=world.world_dir, model_dir=model_dir,
                                 run_dir=str(run_dir), **{**REPLAY, **overrides})


@pytest.fixture(scope="module")
def runs(world, model_dir, tmp_path_factory):
  """Finished replays of the baseline and the PFD+MD coarse ranker: {variant: run_dir}."""
  root = tmp_path_factory.mktemp("replay_runs")
  out = {}
  for variant in ("baseline", "pfd_md"):
    out[variant] = str(root / variant)
    replay_lib.replay(world, FUNNEL, _config(world, model_dir, out[variant],
                                             coarse_variant=variant))
  return out


def _read_run(run_dir):
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  return summary, pd.read_parquet(os.path.join(run_dir, "per_request.parquet"))


def _online(metrics):
  return {k: v for k, v in metrics.items() if not k.startswith(SPEED_PREFIXES)}


# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_replay_writes_the_contract_compare_reads(runs):
  summary, frame = _read_run(runs["pfd_md"])
  assert summary["format"] == 1 and summary["label"] == "coarse=pfd_md,cvr=pfd"
  assert summary["day"] == 4 and summary["seed"] == 0
  assert summary["per_request_file"] == "per_request.parquet"
  assert set(summary["models"]) == {"retrieval", "coarse", "fine_ctr", "fine_cvr"}
  assert summary["models"]["coarse"]["variant"] == "pfd_md"
  assert summary["models"]["coarse"]["train_days"] == [1, 2, 3]
  for flag in ("funnel", "rank_by", "coarse_variant", "cvr_variant", "ctr_variant",
               "max_requests", "batch_requests", "cascade_sample"):
    assert flag in summary["config"]
  expected = [f"online/{kind}_{o}_per_1k" for kind in ("exp", "oracle")
              for o in request_table.OUTCOMES]
  expected += [f"online/share_of_oracle_{o}" for o in request_table.OUTCOMES]
  expected += [f"survival/{s}" for s in funnel_lib.STAGES]
  expected += ["cascade/coarse_fine_recall", "cascade/kendall_tau",
               "cascade/coarse_fine_ctr_recall", "cascade/kendall_tau_ctr", "n_requests",
               "throughput/requests_per_second"]
  expected += [f"offline/{m}_{k}" for m in ("coarse", "fine_ctr", "fine_cvr")
               for k in ("auc", "gauc", "eauc")]
  expected += [f"latency/{s}_ms" for s in funnel_lib.STAGES]
  metrics = summary["metrics"]
  assert set(expected) <= set(metrics)
  assert metrics["n_requests"] == len(frame) == REPLAY["max_requests"]
  assert metrics["cascade/n_requests"] == REPLAY["cascade_sample"]
  assert frame["request_id"].is_unique
  assert all(len(ids) == FUNNEL.page for ids in frame["page_item_ids"])
  assert all(len(ids) == FUNNEL.coarse for ids in frame["coarse_item_ids"])
  assert "retrieved_item_ids" not in frame  # only with --store_retrieved
  for stage in funnel_lib.STAGES:
    assert frame[f"survival_{stage}"].between(0, 1).all()
  assert (frame["survival_retrieval"] >= frame["survival_coarse"]).all()
  assert (frame["survival_coarse"] >= frame["survival_fine"]).all()
  assert not os.path.exists(os.path.join(runs["pfd_md"], run_dir_lib.PARTIAL))
  # Every null figure comes with its reason; the offline scores are kept for compare.
  assert {name for name, value in metrics.items() if value is None} <= set(
      summary["unavailable"])
  offline = pd.read_parquet(os.path.join(runs["pfd_md"], "offline_scores.parquet"))
  assert len(offline) == len(world_logs_of(runs["pfd_md"]))
  assert summary["models"]["retrieval"]["index"]["kind"] == "faiss_ivf"


def world_logs_of(run_dir):
  """The logged impressions of the replayed day (offline_scores.parquet holds one per row)."""
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  world = data.load(summary["config"]["world_dir"], verify="size")
  return world.logs([summary["day"]])


@pytest.mark.slow
def test_the_replay_serves_through_the_ann_index_or_brute_force(world, model_dir, tmp_path):
  survival = {}
  for index in ("brute_force", "faiss_ivf"):
    summary = replay_lib.replay(world, FUNNEL, _config(world, model_dir, tmp_path / index,
                                                       index=index, cascade_sample=0))
    assert summary["models"]["retrieval"]["index"]["kind"] == index
    assert summary["config"]["index"] == index
    survival[index] = summary["metrics"]["survival/retrieval"]
  # The tiny world's 51 IVF cells are all searched (nprobe 64): the same items as exact.
  assert survival["faiss_ivf"] == pytest.approx(survival["brute_force"], abs=1e-9)


@pytest.mark.slow
def test_summary_holds_every_declared_per_request_metric(runs):
  run = compare.load_run(runs["baseline"])
  names = {metric.name for metric in request_table.REQUEST_METRICS}
  assert {"online/exp_gmv_per_1k", "online/share_of_oracle_gmv", "survival/coarse",
          "cascade/coarse_fine_recall", "cascade/kendall_tau"} <= names
  for metric in request_table.REQUEST_METRICS:
    assert set(metric.columns) <= set(run.per_request), metric.name
    assert metric.value(run.per_request) == run.metrics[metric.name], metric.name


@pytest.mark.slow
def test_oracle_page_earns_at_least_the_funnel_page_for_every_request(runs):
  for run_dir in runs.values():
    summary, frame = _read_run(run_dir)
    outcome = replay_lib.OBJECTIVE_OUTCOME[summary["config"]["rank_by"]]
    gap = frame[f"oracle_{outcome}"] - frame[f"exp_{outcome}"]
    assert (gap >= -1e-9 * frame[f"oracle_{outcome}"]).all(), gap.min()


@pytest.mark.parametrize("rank_by", funnel_lib.OBJECTIVES)
def test_oracle_best_page_is_the_brute_force_best_over_the_corpus(world, rank_by):
  request_ids = np.sort(world.request_arrays([4], ["request_id"])["request_id"])[::25]
  finder = best_page_lib.OracleBestPage(world, 4, FUNNEL.page, rank_by, block_pairs=20_000)
  best = finder.top(request_ids)
  corpus = np.broadcast_to(np.arange(world.config.n_items), (len(request_ids),
                                                             world.config.n_items))
  prices = world.entities.item_price
  values = best_page_lib.oracle_item_values(world.oracle, request_ids, corpus, rank_by, prices)
  expected = -np.sort(-values, axis=1)[:, :FUNNEL.page]
  np.testing.assert_allclose(np.take_along_axis(values, best, 1), expected, rtol=1e-12)
  # Optimal as a page too: no random page of K distinct items earns more on the objective.
  outcome = replay_lib.OBJECTIVE_OUTCOME[rank_by]
  earned = replay_lib.page_outcomes(world.oracle, request_ids, best)[outcome]
  rng = np.random.default_rng(0)
  for _ in range(5):
    pages = np.stack([rng.choice(world.config.n_items, FUNNEL.page, replace=False)
                      for _ in request_ids])
    other = replay_lib.page_outcomes(world.oracle, request_ids, pages)[outcome]
    assert (earned >= other * (1 - 1e-12)).all()


def _tamper(model_dir, tmp_path, stage, key, value) -> str:
  copy = str(tmp_path / "models")
  shutil.copytree(model_dir, copy)
  meta_path = os.path.join(copy, *stage.split("/"), "saved_model", "pfd_serving.json")
  with open(meta_path) as f:
    meta = json.load(f)
  meta["extra"][key] = value
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  return copy


@pytest.mark.slow
def test_replay_refuses_models_trained_on_another_world(world, model_dir, tmp_path):
  tampered = _tamper(model_dir, tmp_path, "coarse/pfd_md", "world_hash", "0" * 64)
  run_dir = tmp_path / "run"
  with pytest.raises(command.UserError, match="coarse model at .* was trained on another world"):
    replay_lib.replay(world, FUNNEL, _config(world, tampered, run_dir))
  assert not os.path.exists(run_dir / "summary.json")


@pytest.mark.slow
def test_replay_command_refuses_a_training_day_with_one_line(world, model_dir, tmp_path, capsys):
  run_dir = tmp_path / "run"
  argv = dict(world_dir=world.world_dir, model_dir=model_dir, run_dir=str(run_dir), day=3,
              funnel=FUNNEL.spec())
  if "run_dir" not in FLAGS:
    replay_lib.define_flags()
  with flagsaver.flagsaver(), pytest.raises(SystemExit) as exit_info:
    FLAGS(["replay"] + [f"--{name}={value}" for name, value in argv.items()])
    command.run_command(replay_lib.main, "experiments.replay")(["replay"])
  assert exit_info.value.code == 2
  message = capsys.readouterr().err.strip()
  assert message.count("\n") == 0
  assert message.startswith(
      "experiments.replay: error: --day=3 is a training day of the retrieval model")
  assert not os.path.exists(run_dir / "summary.json")


@pytest.mark.slow
def test_replay_names_the_command_that_trains_a_missing_model(world, model_dir, tmp_path):
  with pytest.raises(config_lib.StageError, match="python -m stages.coarse --variant=md"):
    replay_lib.replay(world, FUNNEL, _config(world, model_dir, tmp_path / "run",
                                             coarse_variant="md"))


@pytest.mark.slow
def test_killed_replay_resumes_to_the_same_summary(world, model_dir, runs, tmp_path,
                                                   monkeypatch):
  run_dir = tmp_path / "run"
  config = _config(world, model_dir, run_dir, coarse_variant="pfd_md")
  write_chunk = run_dir_lib.RunDir.write_chunk

  def write_then_die(self, index, table, seconds):
    write_chunk(self, index, table, seconds)
    raise KeyboardInterrupt("killed after the first chunk")

  monkeypatch.setattr(run_dir_lib.RunDir, "write_chunk", write_then_die)
  with pytest.raises(KeyboardInterrupt):
    replay_lib.replay(world, FUNNEL, config)
  assert not os.path.exists(run_dir / "summary.json")
  assert sorted(os.listdir(run_dir / run_dir_lib.PARTIAL)) == [
      "chunk-00000.json", "chunk-00000.parquet", "config.json"]
  monkeypatch.setattr(run_dir_lib.RunDir, "write_chunk", write_chunk)

  with pytest.raises(command.UserError, match="unfinished replay .*differs in max_requests"):
    replay_lib.replay(world, FUNNEL, _config(world, model_dir, run_dir, coarse_variant="pfd_md",
                                             max_requests=100))
  resumed = replay_lib.replay(world, FUNNEL, config)
  uninterrupted, frame = _read_run(runs["pfd_md"])
  assert _online(resumed["metrics"]) == _online(uninterrupted["metrics"])
  pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "per_request.parquet"), frame)


@pytest.mark.slow
def test_compare_reads_two_replay_runs(runs, tmp_path):
  report = compare.compare([runs["baseline"], runs["pfd_md"]], str(tmp_path / "report"),
                           options=compare.BootstrapOptions(n_boot=50))
  assert os.path.exists(report)
  table = pd.read_csv(tmp_path / "report" / "tables.csv")
  assert set(table["variant"]) == {"coarse=baseline,cvr=pfd", "coarse=pfd_md,cvr=pfd"}
  gmv = table[(table.metric == "online/exp_gmv_per_1k") & (table.variant != table.variant[0])]
  assert gmv["delta_method"].str.contains("paired by request_id").all()


@pytest.mark.parametrize("spec", ["retrieval:100,coarse:200,fine:10", "retrieval:100,fine:10",
                                  "retrieval:a,coarse:10,fine:5"])
def test_funnel_spec_must_name_shrinking_stages(spec):
  with pytest.raises(command.UserError, match="--funnel"):
    funnel_lib.parse_funnel(spec)


@pytest.mark.slow
def test_cached_oracle_pages_are_reused_and_change_no_result(world, model_dir, runs, tmp_path,
                                                            monkeypatch):
  cache = str(tmp_path / "oracle_cache")
  first = replay_lib.replay(world, FUNNEL, _config(world, model_dir, tmp_path / "a",
                                                   coarse_variant="baseline",
                                                   oracle_cache_dir=cache))
  assert len(os.listdir(cache)) == 1

  def no_oracle(self, request_ids):
    raise AssertionError("the cached best pages should have been used")

  monkeypatch.setattr(best_page_lib.OracleBestPage, "top", no_oracle)
  second = replay_lib.replay(world, FUNNEL, _config(world, model_dir, tmp_path / "b",
                                                    coarse_variant="baseline",
                                                    oracle_cache_dir=cache))
  uncached, frame = _read_run(runs["baseline"])
  assert _online(first["metrics"]) == _online(uncached["metrics"])
  assert _online(second["metrics"]) == _online(uncached["metrics"])
  pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "b" / "per_request.parquet"), frame)
