"""reports/README.md is computed from the committed reports, and its verdicts read the right
interval."""

import numpy as np
import pandas as pd

from experiments import paper_summary


def _tables(tmp_path, gain: float, worlds: int, seeds: int = 6):
  """A report dir whose PFD student beats its baseline by `gain` eAUC plus seed noise."""
  rng = np.random.default_rng(0)
  rows = []
  for world_seed in range(worlds):
    world_shift = rng.normal(0, 0.01)
    for seed in range(seeds):
      base = 0.66 + world_shift + rng.normal(0, 0.004)
      for variant, eauc in (("baseline", base), ("pfd", base + gain + rng.normal(0, 0.002))):
        rows.append(dict(study="coarse", stage="coarse", variant=variant, days="1",
                         world="main", world_seed=world_seed, seed=seed, eauc=eauc,
                         ceiling_eauc=0.84, teacher_eauc=0.68 if variant == "pfd" else np.nan))
  report = tmp_path / "paper_x"
  report.mkdir(parents=True)
  pd.DataFrame(rows).to_csv(report / "tables.csv", index=False)
  (report / "report.md").write_text("# x\n\nMade by `python -m experiments.paper --x`.\n")
  return str(report)


def test_a_planted_gain_is_a_gain_with_worlds_as_units_and_no_gain_is_not(tmp_path):
  (gain,) = paper_summary.report_rows(_tables(tmp_path / "a", 0.01, worlds=8))
  assert gain.worlds == 8 and gain.pairs == 48 and gain.by_worlds
  assert abs(gain.world_delta - 0.01) < 0.003 and gain.verdict() == "gain"
  assert gain.command == "python -m experiments.paper --x"
  assert abs(gain.paper - (0.6712 - 0.6625)) < 1e-9
  (null,) = paper_summary.report_rows(_tables(tmp_path / "b", 0.0, worlds=8))
  assert null.verdict() == "not significant"


def test_with_two_worlds_the_verdict_reads_the_pairs(tmp_path):
  (row,) = paper_summary.report_rows(_tables(tmp_path, 0.01, worlds=2))
  assert not row.by_worlds and row.interval() == (row.delta, row.delta_half)


def test_reports_readme_is_written_from_the_committed_reports():
  """reports/README.md's table equals what `python -m experiments.paper_summary` writes."""
  assert paper_summary.main(["--check"]) == 0


def test_the_privileged_kind_is_also_compared_with_the_self_distillation_control(tmp_path):
  report = _tables(tmp_path, 0.01, worlds=4)
  frame = pd.read_csv(f"{report}/tables.csv")
  control = frame[frame["variant"] == "baseline"].assign(variant="self")
  control["eauc"] += 0.006  # distillation alone gains 0.006 of PFD's 0.01
  pd.concat([frame, control]).to_csv(f"{report}/tables.csv", index=False)
  rows = {(r.variant, r.against): r for r in paper_summary.report_rows(report)}
  assert set(rows) == {("pfd", "baseline"), ("self", "baseline"), ("pfd", "self")}
  over_control = rows[("pfd", "self")]
  assert abs(over_control.delta - 0.004) < 0.002 and over_control.pairs == 24
  assert "over self-distillation" in paper_summary.render(list(rows.values()))
