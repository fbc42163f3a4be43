"""experiments.paper_report on synthetic frames of trials: paired deltas over (world seed, seed)
pairs, numeric tables rendered last, the regime map and the plots."""

import math
import os

import numpy as np
import pandas as pd

from experiments import paper_report
from experiments import paper_stats
from experiments import studies
from experiments.studies import regime as paper_regime
from experiments.studies import tables


def _frame(world_seeds=1, with_eauc=True):
  rows = []
  rng = np.random.default_rng(0)
  for world_seed in range(world_seeds):
    for seed in range(3):
      base = 0.65 + 0.02 * rng.random()  # pairs differ a lot, deltas within a pair do not
      for variant, gain in (("baseline", 0.0), ("lupi", -0.004), ("md", 0.0), ("pfd", 0.01),
                            ("pfd_md", 0.005)):
        for days in ("1", "1-7"):
          teacher = None if variant == "baseline" else base + (0.0 if variant == "md" else 0.02)
          row = dict(study="coarse", stage="coarse", variant=variant, world_seed=world_seed,
                     seed=seed, days=days, teacher_auc=teacher, ceiling_auc=0.77,
                     auc=base + gain + (0.001 * seed if variant == "md" else 0.0))
          if with_eauc:
            row["eauc"] = row["auc"] - 0.1 + gain
          rows.append(row)
  return pd.DataFrame(rows)


def test_table_a_is_numeric_with_paired_auc_and_eauc_deltas_and_gap_closure():
  table = tables.auc_table(_frame(), "coarse", "coarse", ["1", "1-7"],
                                 {"1": tables.PAPER_CTR_1DAY})
  pfd = table[(table["method"] == "PFD") & (table["days"] == "1")].iloc[0]
  # The paired delta removes the pair-to-pair spread: exactly +0.01 with no spread.
  assert math.isclose(pfd["Δ AUC"], 0.01, abs_tol=1e-12) and pfd["Δ AUC ±"] < 1e-12
  assert math.isclose(pfd["Δ eAUC"], 0.02, abs_tol=1e-12)
  assert pfd["Δ pairs"] == 3 and pfd["n"] == 3
  assert math.isclose(pfd["gap closure"], 0.5)  # 0.01 of a 0.02 gap
  assert math.isclose(pfd["ceiling AUC"], 0.77)
  assert math.isnan(pfd["linear AUC"])  # no reference measured: n/a, not an error
  assert pfd["paper"] == tables.PAPER_CTR_1DAY["pfd"]
  md = table[(table["method"] == "MD") & (table["days"] == "1")].iloc[0]
  assert math.isclose(md["Δ AUC"], 0.001) and math.isclose(md["Δ AUC ±"], 0.0025, abs_tol=1e-4)
  assert math.isnan(md["gap closure"])  # its teacher is no better than the baseline
  assert table["AUC"].dtype == np.float64


def test_pairs_span_world_seeds():
  table = tables.auc_table(_frame(world_seeds=2), "coarse", "coarse", ["1"], {})
  assert set(table.loc[table["method"] != "baseline", "Δ pairs"]) == {6}


def test_the_report_renders_means_with_half_widths_and_n_a_for_missing_metrics(tmp_path):
  path = paper_report.write(_frame(with_eauc=False), {}, str(tmp_path),
                            command="python -m experiments.paper", studies=["coarse"])
  report = open(path).read()
  pfd = next(line for line in report.splitlines() if line.startswith("| PFD | 1 |"))
  assert "+0.0100 ± 0.0000" in pfd and "n/a" in pfd  # Δ AUC; eAUC not measured
  assert os.path.exists(tmp_path / "plots" / "table_a.png")
  assert "python -m experiments.paper" in report


def test_format_table_pairs_mean_and_half_width_columns():
  table = pd.DataFrame({"name": ["a", "b"], "x": [0.5, np.nan], "x ±": [0.01, np.nan],
                        "Δ y": [0.002, -0.001], "Δ y ±": [np.nan, 0.0005], "n": [3, 0]})
  shown = paper_stats.format_table(table)
  assert list(shown.columns) == ["name", "x", "Δ y", "n"]
  assert list(shown["x"]) == ["0.5000 ± 0.0100", "n/a"]
  assert list(shown["Δ y"]) == ["+0.0020", "-0.0010 ± 0.0005"]
  assert list(shown["n"]) == ["3", "0"]


def test_lambda_sweep_starts_from_the_baseline_student(tmp_path):
  rows = [dict(study="cvr", stage="fine_cvr", variant="baseline", seed=s, days="1-7", auc=0.70)
          for s in range(2)]
  rows += [dict(study="lambda", stage="fine_cvr", variant="pfd", seed=s, days="1-7",
                distill_lambda=lam, auc=0.70 + lam / 10, teacher_auc=0.8)
           for s in range(2) for lam in (0.1, 0.5)]
  section = studies.get("lambda").section(studies.Report(pd.DataFrame(rows), str(tmp_path)))
  assert list(section.table["λ"]) == ["0 (baseline)", "0.1", "0.5"]
  assert np.allclose(section.table["fine_cvr PFD"], [0.70, 0.71, 0.75])
  assert os.path.exists(tmp_path / "lambda_sweep.png")


def _regime_frame():
  rows = []
  for bias in (-4.5, -8.8):
    for strength in (0.0, 1.0):
      world = f"conversion_bias={bias},purchase_intent_sd={strength}"
      for days in ("1", "1-3"):
        for world_seed in range(2):
          for seed in range(2):
            base = 0.7 + 0.01 * seed + 0.02 * world_seed
            gain = 0.01 * strength * (bias < -5)  # PFD helps only when sparse and strong
            for variant, extra in (("baseline", 0.0), ("pfd", gain), ("pfd_md", gain / 2)):
              rows.append(dict(study="regime", stage="fine_cvr", variant=variant, world=world,
                               world_seed=world_seed, seed=seed, days=days,
                               conversion_bias=bias, purchase_intent_sd=strength,
                               auc=base + extra, eauc=base + extra + 0.001 * seed * extra,
                               ceiling_eauc=0.8))
  return pd.DataFrame(rows)


def test_regime_map_has_one_row_per_cell_with_paired_eauc_gains_and_heatmaps(tmp_path):
  section = paper_regime.regime_section(_regime_frame(), str(tmp_path))
  table = section.table
  assert len(table) == 8  # 2 days x 2 sparsities x 2 strengths
  sparse_strong = table[(table["conversion_bias"] == -8.8) & (table["purchase_intent_sd"] == 1)]
  assert np.allclose(sparse_strong["Δ eAUC PFD"], 0.01, atol=1e-3)
  assert sparse_strong["PFD eAUC CI excludes 0"].all() and (sparse_strong["PFD pairs"] == 4).all()
  dense = table[table["conversion_bias"] == -4.5]
  assert np.allclose(dense["Δ eAUC PFD"], 0.0) and not dense["PFD eAUC CI excludes 0"].any()
  assert os.path.exists(tmp_path / "regime_pfd.png")
  assert os.path.exists(tmp_path / "regime_pfd_md.png")
  assert any("plots/regime_pfd.png" in line for line in section.notes)


def test_sections_without_rows_render_nothing():
  empty = pd.DataFrame({"study": [], "stage": [], "variant": [], "seed": []})
  for study in studies.REGISTRY.values():
    assert paper_stats.render_section(study.section(studies.Report(empty, "unused"))) == [], \
        study.name


def test_power_is_the_t_tests_and_gap_closure_a_ratio_of_means_over_worlds():
  # A paired t-test for an effect of half a standard deviation needs 34 pairs (textbook).
  deltas = np.array([0.5 - 1, 0.5 + 1, 0.5 - 1, 0.5 + 1]) * 1.0
  deltas = (deltas - deltas.mean()) / deltas.std(ddof=1) + 0.5  # mean 0.5, sd 1 exactly
  assert paper_stats.pairs_for_power(deltas) == 34
  rows = []
  for world_seed in range(4):
    for seed in range(3):
      base = 0.6 + 0.01 * world_seed
      rows += [dict(study="cvr", stage="fine_cvr", variant="baseline", world_seed=world_seed,
                    seed=seed, days="1-7", auc=base, eauc=base),
               dict(study="cvr", stage="fine_cvr", variant="pfd", world_seed=world_seed,
                    seed=seed, days="1-7", auc=base + 0.01 * (1 + seed),
                    eauc=base + 0.002 * world_seed, teacher_auc=base + 0.04 + 0.02 * seed,
                    teacher_eauc=base + 0.01)]
  frame = pd.DataFrame(rows)
  ratio, low, high = paper_stats.gap_closure(frame, "pfd", "auc", study="cvr")
  # mean gain 0.02 over mean gap 0.06: a third; the mean of per-pair ratios would be 0.35
  assert math.isclose(ratio, 1 / 3) and low <= ratio <= high
  by_world = paper_stats.world_deltas(frame, "pfd", "eauc", study="cvr")
  assert np.allclose(by_world, [0.0, 0.002, 0.004, 0.006])
  table = tables.auc_table(frame, "fine_cvr", "cvr", ["1-7"], {})
  pfd = table[table["method"] == "PFD"].iloc[0]
  assert pfd["worlds"] == 4 and math.isclose(pfd["Δ eAUC, worlds as units"], 0.003)
  shown = paper_stats.format_table(table)
  assert shown.loc[pfd.name, "gap closure"].startswith("0.33 [")


def test_the_study_report_opens_with_a_headline_of_paired_deltas_and_verdicts(tmp_path):
  path = paper_report.write(_frame(world_seeds=2), {}, str(tmp_path),
                            command="python -m experiments.paper", studies=["coarse"])
  report = open(path).read()
  assert report.index("## Headline: does PFD help here?") < report.index("## Table A")
  headline = report.split("## Headline: does PFD help here?")[1].split("## Table A")[0]
  pfd = next(line for line in headline.splitlines() if line.startswith("| coarse PFD, 1 day"))
  assert "+0.0200" in pfd and pfd.rstrip(" |").endswith(tables.PAPER_CTR_1DAY["pfd"])
  assert "| significant gain |" in pfd  # eAUC +0.02 on every pair
  lupi = next(line for line in headline.splitlines() if line.startswith("| coarse LUPI, 1 day"))
  assert "| significant loss |" in lupi  # eAUC -0.008 on every pair
  assert (tmp_path / "report.html").exists()
