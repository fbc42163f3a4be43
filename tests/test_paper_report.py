"""experiments.paper_report on a synthetic frame of trials: paired deltas, tables and plots."""

import os

import numpy as np
import pandas as pd

from experiments import paper_report


def _frame():
  rows = []
  rng = np.random.default_rng(0)
  for seed in range(3):
    base = 0.65 + 0.02 * rng.random()  # seeds differ a lot, pairs do not
    for variant, gain in (("baseline", 0.0), ("lupi", -0.004), ("md", 0.0), ("pfd", 0.01),
                          ("pfd_md", 0.005)):
      for days in ("1", "1-7"):
        teacher = None if variant == "baseline" else base + (0.0 if variant == "md" else 0.02)
        rows.append(dict(study="coarse", stage="coarse", variant=variant, seed=seed, days=days,
                         auc=base + gain + (0.001 * seed if variant == "md" else 0.0),
                         teacher_auc=teacher))
  return pd.DataFrame(rows)


def test_table_a_has_paired_deltas_gap_closure_and_a_plot(tmp_path):
  path = paper_report.write(_frame(), {}, str(tmp_path), command="python -m experiments.paper",
                            studies=["coarse"])
  report = open(path).read()
  pfd = next(line for line in report.splitlines() if line.startswith("| PFD |"))
  cells = [c.strip() for c in pfd.strip("|").split("|")]
  # The paired delta removes the seed-to-seed spread: exactly +0.01 with no spread.
  assert cells[5] == cells[6] == "+0.0100 ± 0.0000", cells
  assert cells[7].startswith("0.5000"), cells  # gap closure: 0.01 of a 0.02 gap
  md = next(line for line in report.splitlines() if line.startswith("| MD |"))
  assert "+0.0010 ± 0.0025" in md  # per-seed deltas 0, 0.001, 0.002: t-CI over 3 seeds
  assert "n/a (no significant gap)" in md  # its teacher is no better than the baseline
  assert os.path.exists(tmp_path / "plots" / "table_a.png")
  assert "python -m experiments.paper" in report


def test_lambda_sweep_starts_from_the_baseline_student(tmp_path):
  rows = [dict(study="cvr", stage="fine_cvr", variant="baseline", seed=s, days="1-7", auc=0.70)
          for s in range(2)]
  rows += [dict(study="lambda", stage="fine_cvr", variant="pfd", seed=s, days="1-7",
                distill_lambda=lam, auc=0.70 + lam / 10, teacher_auc=0.8)
           for s in range(2) for lam in (0.1, 0.5)]
  path = paper_report.write(pd.DataFrame(rows), {}, str(tmp_path), command="c",
                            studies=["cvr", "lambda"])
  lines = open(path).read().splitlines()
  start = lines.index("| 0 (baseline) | - | 0.7000 ± 0.0000 | 0.7000 ± 0.0000 |")
  assert lines[start + 1].startswith("| 0.1 | - | 0.7100") and lines[start + 2].startswith("| 0.5")
  assert os.path.exists(tmp_path / "plots" / "lambda_sweep.png")


def test_auc_table_is_a_frame_with_one_row_per_method():
  table = paper_report.auc_table(_frame(), "coarse", "coarse", {"1": "1", "1-7": "1-7"},
                                 {"paper, 1 day": paper_report.PAPER_CTR_1DAY})
  assert list(table["method"]) == [paper_report.NAMES[v] for v in paper_report.VARIANTS]
  pfd = table.set_index("method").loc["PFD"]
  assert pfd["Δ vs baseline, days 1"] == pfd["Δ vs baseline, days 1-7"] == "+0.0100 ± 0.0000"
  assert pfd["gap closure, days 1"].startswith("0.5000")
  assert pfd["paper, 1 day"] == paper_report.PAPER_CTR_1DAY["pfd"]


def test_sections_without_rows_render_nothing():
  empty = pd.DataFrame({"study": [], "stage": [], "variant": [], "seed": []})
  assert paper_report.cost_section(empty) is None
  assert paper_report.render_section(paper_report.online_section({})) == []
