"""compare's report leads with the answer: the headline table first, verdicts, intervals for the
offline figures (bootstrap over users), n/a with reasons, integers as integers, no relative
delta where one means nothing, survival plotted in funnel order, one self-contained HTML page."""

import json
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa

from data.plumbing import files
from experiments import compare
from experiments import compare_plots
from experiments import compare_report
from experiments import offline_table
from experiments import run_dir as run_dir_lib
from tests.test_compare import FAST
from tests.test_compare import PLANTED_CLICK_LIFT
from tests.test_compare import write_run

AUC_GAIN = 0.15  # the "pfd" run's coarse scores carry more of the label


def _offline_scores(seed: int, signal: float) -> pd.DataFrame:
  """Logged impressions of one day (the same for every run) and a coarse score whose AUC
  grows with `signal`; fine CTR the same model in every run."""
  rng = np.random.default_rng(7)
  n, users = 6000, 300
  user_id = rng.integers(0, users, n)
  click = (rng.random(n) < 0.1).astype(np.int8)
  noise = np.random.default_rng(100 + seed).normal(size=n)
  frame = pd.DataFrame({"request_id": np.arange(n) // 10 + 1000, "item_id": np.arange(n) % 97,
                        "user_id": user_id, "click": click,
                        "conversion": np.zeros(n, np.int8)})
  frame["coarse"] = 1 / (1 + np.exp(-(signal * click + noise)))
  frame["fine_ctr"] = 1 / (1 + np.exp(-(0.5 * click + rng.normal(size=n))))
  frame["fine_cvr"] = np.nan
  frame["p_click"] = np.clip(0.1 + 0.05 * rng.normal(size=n), 0.01, 0.99)
  frame["p_conversion"] = 0.01
  return frame


def _runs(tmp_path, null_reason=None):
  base = write_run(tmp_path, "base", "baseline", 0)
  pfd = write_run(tmp_path, "pfd", "pfd", 0, lift=PLANTED_CLICK_LIFT)
  for path, signal in ((base, 0.5), (pfd, 0.5 + AUC_GAIN * 10)):
    offline = _offline_scores(0, signal)
    files.write_parquet(os.path.join(path, run_dir_lib.OFFLINE_SCORES),
                        pa.Table.from_pandas(offline, preserve_index=False))
    summary_path = os.path.join(path, "summary.json")
    with open(summary_path) as f:
      summary = json.load(f)
    summary["metrics"].update(offline_table.summary_metrics(offline))
    summary["metrics"]["n_requests"] = 300
    summary["metrics"]["latency/retrieval_ms"] = 0.5
    reasons = offline_table.null_reasons(offline, True)
    if null_reason:
      reasons["cascade/kendall_tau"] = null_reason
    for name in reasons:
      summary["metrics"][name] = None
    summary["unavailable"] = reasons
    with open(summary_path, "w") as f:
      json.dump(summary, f)
  return base, pfd


def test_the_report_opens_with_the_headline_and_a_plain_verdict(tmp_path):
  base, pfd = _runs(tmp_path)
  path = compare.compare([base, pfd], str(tmp_path / "report"), options=FAST)
  text = open(path).read()
  heads = re.findall(r"^## (.*)$", text, re.M)
  assert heads[0] == "Headline: pfd against baseline"
  first_table = text.split("## Headline: pfd against baseline")[1].split("##")[0]
  rows = [line.split(" | ")[0].strip("| ") for line in first_table.splitlines()
          if line.startswith("| ") and "---" not in line][1:]
  assert rows[:3] == ["expected GMV per 1,000 requests", "expected clicks per 1,000 requests",
                      "expected conversions per 1,000 requests"]
  assert rows[-3:] == ["oracle-best items surviving retrieval",
                       "oracle-best items surviving coarse rank",
                       "oracle-best items surviving fine rank (on the page)"]
  clicks = next(line for line in first_table.splitlines() if "expected clicks" in line)
  assert clicks.endswith("**significant gain** |")
  # The lead sentence, before any table, says the same.
  assert "clicks per 1,000 requests +" in text.split("## ")[0]
  assert text.index("## Headline") < text.index("## Diagnostics") < text.index("## Plots")


def test_offline_aucs_get_bootstrap_intervals_over_users_and_paired_deltas(tmp_path):
  base, pfd = _runs(tmp_path)
  compare.compare([base, pfd], str(tmp_path / "report"), options=FAST)
  table = pd.read_csv(tmp_path / "report" / "tables.csv").set_index(["variant", "metric"])
  for name in ("offline/coarse_auc", "offline/coarse_eauc", "offline/coarse_gauc"):
    row = table.loc[("pfd", name)]
    assert row["ci_lo"] < row["mean"] < row["ci_hi"], name
    assert "bootstrap over users" in row["ci_method"]
    assert "paired on the same logged impressions" in row["delta_method"]
  auc = table.loc[("pfd", "offline/coarse_auc")]
  assert auc["delta_lo"] > 0  # the planted gain is found
  # The same fine CTR scores in both runs: a delta of exactly 0.
  same = table.loc[("pfd", "offline/fine_ctr_auc")]
  assert same["delta"] == 0 and same["delta_lo"] == 0 and same["delta_hi"] == 0


def test_null_figures_read_n_a_with_their_reason(tmp_path):
  reason = "the fine ranking score is constant (a world without prices)"
  base, pfd = _runs(tmp_path, null_reason=reason)
  text = open(compare.compare([base, pfd], str(tmp_path / "report"), options=FAST)).read()
  tau = next(line for line in text.splitlines() if line.startswith("| Kendall tau, coarse vs "
                                                                   "fine ranking"))
  assert "n/a (" in tau
  notes = text.split("## Why some figures are n/a")[1].split("##")[0]
  assert reason in notes
  # No conversion in the logged clicks: fine CVR AUC is n/a, and says why.
  assert "hold no conversions: an AUC needs both classes" in notes


def test_counts_are_integers_and_kendall_tau_and_counts_have_no_relative_delta(tmp_path):
  base, pfd = _runs(tmp_path)
  text = open(compare.compare([base, pfd], str(tmp_path / "report"), options=FAST)).read()
  requests = next(line for line in text.splitlines() if line.startswith("| requests replayed"))
  assert requests == "| requests replayed | 300 | 300 | +0 |"
  tau = next(line for line in text.splitlines()
             if line.startswith("| Kendall tau, coarse vs fine ranking score"))
  assert "%" not in tau
  deltas = compare_report.deltas_frame(pd.read_csv(tmp_path / "report" / "tables.csv"),
                                       ["baseline", "pfd"], "baseline")
  for name in ("cascade/kendall_tau", "n_requests", "latency/retrieval_ms",
               "offline/coarse_auc"):
    assert np.isnan(deltas.loc[name, ("pfd", "rel_delta")]), name
  assert not np.isnan(deltas.loc["online/exp_clicks_per_1k", ("pfd", "rel_delta")])
  assert compare_report._number(20014.0) == "20,014"
  assert compare_report._number(2.001e4, integer=True) == "20,010"


def test_survival_is_plotted_in_funnel_order(tmp_path, monkeypatch):
  shown = {}

  def keep(path, figure):
    shown[os.path.basename(path)] = [t.get_text() for t in figure.axes[0].get_xticklabels()]
  monkeypatch.setattr(compare_plots.files, "write_png", keep)
  table = pd.DataFrame({"variant": "a", "metric": ["survival/coarse", "survival/fine",
                                                   "survival/retrieval"],
                        "mean": [0.5, 0.2, 0.8], "ci_lo": np.nan, "ci_hi": np.nan})
  compare_plots.write_plots(table, ["a"], str(tmp_path))
  assert shown["funnel_survival.png"] == ["retrieval", "coarse", "fine"]


def test_the_html_page_stands_alone_with_every_figure_embedded(tmp_path):
  base, pfd = _runs(tmp_path)
  compare.compare([base, pfd], str(tmp_path / "report"), options=FAST)
  page = open(tmp_path / "report" / "report.html").read()
  sources = re.findall(r'<img[^>]*src="([^"]+)"', page)
  assert sources and all(src.startswith("data:image/png;base64,") for src in sources)
  assert len(sources) == len(os.listdir(tmp_path / "report" / "plots"))
  assert "<table>" in page and "<title>Replay comparison: pfd against baseline</title>" in page
