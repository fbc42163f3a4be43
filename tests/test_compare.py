"""Tests for experiments.compare on small, structurally real replay run dirs."""

import json
import os

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pandas as pd
import pytest

from data.plumbing import command
from experiments import compare
from experiments import compare_report
from experiments import compare_stats

PLANTED_CLICK_LIFT = 0.05  # expected clicks per request added by the "pfd" variant
N_USERS, REQUESTS_PER_USER = 60, 5
FAST = compare.BootstrapOptions(n_boot=300, seed=0, unit="user")


def _requests(seed_noise: int) -> pd.DataFrame:
  """The same replayed requests for every run (fixed rng), plus a little per-seed noise."""
  rng = np.random.default_rng(123)
  n = N_USERS * REQUESTS_PER_USER
  user_taste = rng.uniform(0.2, 0.6, N_USERS)
  user_id = np.repeat(np.arange(N_USERS), REQUESTS_PER_USER)
  frame = pd.DataFrame({"request_id": np.arange(n) + 1000, "user_id": user_id})
  frame["exp_clicks"] = user_taste[user_id] + rng.normal(0, 0.05, n)
  frame["exp_conversions"] = frame.exp_clicks * 0.1
  frame["exp_gmv"] = frame.exp_conversions * rng.uniform(10, 50, n)
  for outcome in ("clicks", "conversions", "gmv"):
    frame[f"oracle_{outcome}"] = frame[f"exp_{outcome}"] * 1.5
  for stage, level in (("retrieval", 0.8), ("coarse", 0.6), ("fine", 0.4)):
    frame[f"survival_{stage}"] = np.clip(level + rng.normal(0, 0.1, n), 0, 1)
  for suffix in ("", "_ctr"):
    frame[f"coarse_fine{suffix}_recall"] = rng.uniform(0.5, 0.9, n)
    frame[f"kendall_tau{suffix}"] = rng.uniform(0.2, 0.6, n)
    frame.loc[0, f"kendall_tau{suffix}"] = np.nan  # a request with too few candidates
  frame["exp_clicks"] += np.random.default_rng(seed_noise).normal(0, 0.003, n)
  return frame


def _summary_metrics(frame: pd.DataFrame, seed: int) -> dict:
  """What replay would write for the frame: the same definitions compare recomputes."""
  summary = {f"online/exp_{o}_per_1k": 1000 * frame[f"exp_{o}"].mean()
             for o in ("clicks", "conversions", "gmv")}
  summary.update({f"online/share_of_oracle_{o}": frame[f"exp_{o}"].sum()
                  / frame[f"oracle_{o}"].sum() for o in ("clicks", "conversions", "gmv")})
  summary.update({f"survival/{s}": frame[f"survival_{s}"].mean()
                  for s in ("retrieval", "coarse", "fine")})
  for name in ("coarse_fine_recall", "kendall_tau", "coarse_fine_ctr_recall", "kendall_tau_ctr"):
    summary[f"cascade/{name}"] = frame[name].mean()
  summary["offline/coarse_auc"] = 0.7 + 0.001 * seed
  return summary


def write_run(root, name, label, seed, lift=0.0, world_hash="world-a", day=8) -> str:
  """A replay run dir as experiments.replay writes it, with `lift` planted in exp_clicks."""
  run_dir = os.path.join(str(root), name)
  os.makedirs(run_dir)
  frame = _requests(seed_noise=seed + (1000 if lift else 0))
  frame["exp_clicks"] += lift
  frame.to_parquet(os.path.join(run_dir, "per_request.parquet"))
  summary = {"format": 1, "label": label, "seed": seed, "day": day, "world_hash": world_hash,
             "config": {"seed": seed}, "models": {"coarse": {"variant": label, "hash": "x"}},
             "metrics": _summary_metrics(frame, seed), "per_request_file": "per_request.parquet"}
  with open(os.path.join(run_dir, "summary.json"), "w") as file:
    json.dump(summary, file)
  return run_dir


def _row(table: pd.DataFrame, variant: str, metric: str) -> pd.Series:
  return table[(table.variant == variant) & (table.metric == metric)].iloc[0]


def test_single_seed_paired_delta_recovers_planted_lift(tmp_path, capsys):
  base = write_run(tmp_path, "base", "coarse=base", 0)
  pfd = write_run(tmp_path, "pfd", "coarse=pfd", 0, lift=PLANTED_CLICK_LIFT)
  report = compare.compare([base, pfd], str(tmp_path / "report"), options=FAST)
  table = pd.read_csv(tmp_path / "report" / "tables.csv")
  row = _row(table, "coarse=pfd", "online/exp_clicks_per_1k")
  planted = 1000 * PLANTED_CLICK_LIFT
  assert row.delta == pytest.approx(planted, rel=0.05)
  assert row.delta_lo < planted < row.delta_hi and row.delta_lo > 0
  assert "paired by request_id" in row.delta_method
  assert "bootstrap over users" in row.ci_method
  assert row.ci_lo < row["mean"] < row.ci_hi
  assert np.isnan(_row(table, "coarse=pfd", "offline/coarse_auc").ci_lo)  # not per-request
  for plot in ("funnel_survival.png", "online_per_1k.png", "share_of_oracle.png"):
    assert (tmp_path / "report" / "plots" / plot).stat().st_size > 0
  text = open(report).read()
  assert "coarse=pfd - coarse=base" in text and "world-a" in text and base in text
  assert capsys.readouterr().out.rstrip().endswith(f"report: {report}")
  assert not [name for name in os.listdir(tmp_path / "report") if ".tmp-" in name]


def test_runs_sharing_a_label_are_seeds_and_deltas_pair_by_seed(tmp_path):
  for seed in (0, 1, 2):
    write_run(tmp_path, f"base_s{seed}", "base", seed)
    write_run(tmp_path, f"pfd_s{seed}", "pfd", seed, lift=PLANTED_CLICK_LIFT)
  compare.compare([str(tmp_path / "base_s*"), str(tmp_path / "pfd_s*")],
                  str(tmp_path / "report"), baseline="base", options=FAST)
  table = pd.read_csv(tmp_path / "report" / "tables.csv")
  assert set(table.variant) == {"base", "pfd"}
  row = _row(table, "pfd", "online/exp_clicks_per_1k")
  assert row.n_seeds == 3 and row.ci_method == "t over 3 seeds"
  assert row.delta_method == "t over 3 seeds, paired by seed"
  assert row.delta_lo < 1000 * PLANTED_CLICK_LIFT < row.delta_hi and row.delta_lo > 0
  assert _row(table, "pfd", "offline/coarse_auc").delta == pytest.approx(0.0, abs=1e-12)


def test_baseline_can_be_named_by_run_dir(tmp_path):
  base = write_run(tmp_path, "base", "base", 0)
  pfd = write_run(tmp_path, "pfd", "pfd", 0, lift=PLANTED_CLICK_LIFT)
  compare.compare([base, pfd], str(tmp_path / "report"), baseline=pfd, options=FAST)
  table = pd.read_csv(tmp_path / "report" / "tables.csv")
  assert _row(table, "base", "online/exp_clicks_per_1k").delta < 0
  assert np.isnan(_row(table, "pfd", "online/exp_clicks_per_1k").delta)


def test_dir_without_summary_is_not_a_finished_replay_run(tmp_path):
  (tmp_path / "half_done").mkdir()
  with pytest.raises(compare.CompareInputError,
                     match="not a finished replay run.*python -m experiments.replay"):
    compare.compare([str(tmp_path / "half_done")], str(tmp_path / "report"))


def test_runs_of_different_worlds_are_refused_unless_allowed(tmp_path):
  base = write_run(tmp_path, "base", "base", 0, world_hash="world-a")
  other = write_run(tmp_path, "other", "pfd", 0, world_hash="world-b")
  with pytest.raises(compare.CompareInputError, match="different worlds.*--allow_mixed_worlds"):
    compare.compare([base, other], str(tmp_path / "report"))
  compare.compare([base, other], str(tmp_path / "report"), allow_mixed_worlds=True,
                  options=FAST)


def test_unknown_baseline_and_empty_glob_are_refused(tmp_path):
  base = write_run(tmp_path, "base", "base", 0)
  with pytest.raises(compare.CompareInputError, match="unknown baseline 'nope'"):
    compare.compare([base], str(tmp_path / "report"), baseline="nope")
  with pytest.raises(compare.CompareInputError, match="matches no directory"):
    compare.compare([str(tmp_path / "missing_*")], str(tmp_path / "report"))


def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path, capsys):
  (tmp_path / "half_done").mkdir()
  if "run_dirs" not in flags.FLAGS:
    command.define_config_flags(compare.CompareConfig)
  with flagsaver.flagsaver():
    flags.FLAGS(["compare", f"--run_dirs={tmp_path / 'half_done'}",
                 f"--report_dir={tmp_path / 'report'}"])
    with pytest.raises(SystemExit) as exit_info:
      command.run_command(compare.main, "experiments.compare")(["compare"])
  assert exit_info.value.code == 2
  message = capsys.readouterr().err.strip()
  assert message.startswith("experiments.compare: error: ") and "\n" not in message
  assert "python -m experiments.replay" in message


def test_compare_defines_no_flag_at_import():
  import subprocess
  import sys
  code = ("from absl import flags; import experiments.compare, experiments.replay; "
          "print(sorted(n for n in ('run_dirs', 'report_dir', 'run_dir', 'funnel', "
          "'ctr_variant', 'rank_by') if n in flags.FLAGS))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


def _planted_tables(tmp_path):
  base = write_run(tmp_path, "base", "coarse=base", 0)
  pfd = write_run(tmp_path, "pfd", "coarse=pfd", 0, lift=PLANTED_CLICK_LIFT)
  runs = [compare.load_run(path) for path in (base, pfd)]
  variants = {run.label: [run] for run in runs}
  return compare_stats.build_tables(variants, "coarse=base", FAST), variants


def test_report_frames_hold_the_numbers_the_markdown_shows(tmp_path):
  table, variants = _planted_tables(tmp_path)
  metrics = compare_report.metrics_frame(table, list(variants))
  clicks = metrics.loc["online/exp_clicks_per_1k"]
  assert clicks["coarse=pfd", "mean"] - clicks["coarse=base", "mean"] == pytest.approx(
      1000 * PLANTED_CLICK_LIFT, rel=0.05)
  assert clicks["coarse=base", "ci_lo"] < clicks["coarse=base", "mean"] < clicks["coarse=base",
                                                                                 "ci_hi"]
  assert metrics.loc["offline/coarse_auc", ("coarse=pfd", "mean")] == pytest.approx(0.7)
  assert np.isnan(metrics.loc["offline/coarse_auc", ("coarse=pfd", "ci_lo")])
  deltas = compare_report.deltas_frame(table, list(variants), "coarse=base")
  assert list(dict.fromkeys(deltas.columns.get_level_values("variant"))) == ["coarse=pfd"]
  row = deltas.loc["online/exp_clicks_per_1k", "coarse=pfd"]
  assert row["delta_lo"] < 1000 * PLANTED_CLICK_LIFT < row["delta_hi"]
  assert row["rel_delta"] == pytest.approx(row["delta"] / clicks["coarse=base", "mean"],
                                           rel=0.05)
  methods = compare_report.methods_frame(table, "delta_method")
  assert methods["n_metrics"].sum() == table["delta_method"].notna().sum()
  text = compare_report.metrics_markdown(metrics, variants)
  assert f"{clicks['coarse=pfd', 'mean']:.4g}" in text


def test_every_declared_per_request_metric_is_compared_with_a_bootstrap(tmp_path):
  table, _ = _planted_tables(tmp_path)
  from experiments import request_table
  pfd = table[table.variant == "coarse=pfd"].set_index("metric")
  for metric in request_table.REQUEST_METRICS:
    assert "bootstrap" in pfd.loc[metric.name, "ci_method"], metric.name
    assert "bootstrap" in pfd.loc[metric.name, "delta_method"], metric.name
