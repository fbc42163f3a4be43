"""reports/README.md: does PFD help, and when? One table and one picture from committed reports.

    python -m experiments.paper_summary           # rewrite reports/README.md and its picture
    python -m experiments.paper_summary --check   # exit 1 if reports/README.md is stale

Every figure is computed from a committed report's tables.csv (never typed in), so the summary
cannot drift from the reports it links. Each row is one model comparison of Tables A and B
(a teacher kind against its baseline student, in one world and one span of training days):
its Δ eAUC paired on (world seed, training seed), the same Δ with the world as the unit (each
world's mean Δ, a t interval over worlds: what the verdict reads once a report has 3 worlds
or more), the baseline, teacher and oracle ceiling beside it, gap closure, and the paper's
Δ AUC where the paper has one. The prose around the generated block is written by hand.
"""

import dataclasses
import glob
import math
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from data.plumbing import files
from experiments import paper_stats as stats
from experiments.studies import tables as paper_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORTS = os.path.join(ROOT, "reports")
README = os.path.join(REPORTS, "README.md")
PICTURE = "summary.png"
BEGIN = "<!-- BEGIN generated: python -m experiments.paper_summary -->"
END = "<!-- END generated -->"
STAGES = {"coarse": "coarse", "fine_cvr": "fine CVR"}  # the students of Tables A and B
CONTROL = "self"  # the self-distillation control (models.teacher_kinds)
PRIVILEGED_KINDS = ("pfd", "pfd_md", "lupi")  # kinds whose teacher reads privileged features
MIN_WORLDS_FOR_VERDICT = 3  # fewer worlds: the verdict reads the pair-level interval


@dataclasses.dataclass(frozen=True)
class Row:
  """One comparison: a teacher kind against its baseline student in one report."""
  report: str
  command: str
  stage: str
  variant: str
  days: str
  world: str
  pairs: int
  worlds: int
  baseline_eauc: float
  teacher_eauc: float
  ceiling_eauc: float
  delta: float
  delta_half: float
  world_delta: float
  world_half: float
  world_p: float
  closure: float
  closure_low: float
  closure_high: float
  paper: float
  against: str = "baseline"  # the student the Δ is taken against

  @property
  def by_worlds(self) -> bool:
    return self.worlds >= MIN_WORLDS_FOR_VERDICT

  def interval(self):
    """(estimate, half-width) the verdict reads."""
    return (self.world_delta, self.world_half) if self.by_worlds else (self.delta,
                                                                        self.delta_half)

  def verdict(self) -> str:
    mean, half = self.interval()
    if math.isnan(mean) or math.isnan(half):
      return "no interval"
    if mean - half > 0:
      return "gain"
    if mean + half < 0:
      return "loss"
    return "not significant"


def _command(report_dir: str) -> str:
  """The command a report was made by (its first line says)."""
  path = os.path.join(report_dir, "report.md")
  if not os.path.exists(path):
    return ""
  found = re.search(r"Made by `([^`]*)`", open(path).read())
  return found.group(1) if found else ""


def _student(cell: str) -> float:
  """The paper's student AUC from a cell such as "0.6712 (0.6921)" (teacher in brackets)."""
  found = re.match(r"\s*([0-9.]+)", str(cell or ""))
  return float(found.group(1)) if found else math.nan


def paper_delta(stage: str, variant: str, days: str) -> float:
  """The paper's Δ AUC of `variant` over its baseline in the nearest setting: coarse at 1 day
  (Table A) or its 10 days for longer spans; CVR at 30 days (Table B)."""
  if stage == "coarse":
    table = paper_tables.PAPER_CTR_1DAY if "-" not in days else paper_tables.PAPER_CTR_10DAYS
  else:
    table = paper_tables.PAPER_CVR_30DAYS
  return _student(table.get(variant, "")) - _student(table.get("baseline", ""))


def _mean(values) -> float:
  values = np.asarray(values, dtype=np.float64)
  return float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan


def report_rows(report_dir: str) -> List[Row]:
  """Every comparison of Tables A and B in one report's tables.csv."""
  frame = stats.with_pairs(pd.read_csv(os.path.join(report_dir, "tables.csv"), dtype={
      "days": str, "world": str}))
  frame = frame[frame["study"].isin(["coarse", "cvr"]) & frame["stage"].isin(list(STAGES))]
  name, command = os.path.basename(report_dir), _command(report_dir)
  rows = []
  for (stage, days, world), group in frame.groupby(["stage", "days", "world"], sort=False):
    rows += _comparisons(name, command, stage, str(days), str(world), group, "baseline")
    if CONTROL in set(group["variant"]):
      # The control as the reference: what the privileged features add beyond distillation.
      control = group[group["variant"] != "baseline"].replace({"variant": {CONTROL: "baseline"}})
      rows += [r for r in _comparisons(name, command, stage, str(days), str(world), control,
                                       CONTROL) if r.variant in PRIVILEGED_KINDS]
  return rows


def _comparisons(name: str, command: str, stage: str, days: str, world: str,
                 group: pd.DataFrame, against: str) -> List[Row]:
  """Each kind of `group` against the rows labelled baseline (which are `against`'s)."""
  where: Dict[str, Any] = dict(stage=stage, days=days, world=world)
  base = stats.rows_where(group, variant="baseline")
  rows = []
  for variant in [v for v in group["variant"].unique() if v not in ("baseline", "reference")]:
    deltas = stats.paired_deltas(group, variant, "eauc", **where)
    if not len(deltas):
      continue
    per_world = stats.world_deltas(group, variant, "eauc", **where)
    delta, delta_half, pairs = stats.stat(deltas)
    world_delta, world_half, worlds = stats.stat(per_world)
    closure = (stats.gap_closure(group, variant, "eauc", **where) if against == "baseline"
               else (math.nan, math.nan, math.nan))
    teacher = stats.rows_where(group, variant=variant)
    rows.append(Row(
        report=name, command=command, stage=stage, variant=variant, days=str(days),
        world=str(world), pairs=pairs, worlds=worlds,
        baseline_eauc=_mean(stats.metric_values(base, "eauc")),
        teacher_eauc=_mean(stats.metric_values(teacher, "teacher_eauc")),
        ceiling_eauc=_mean(stats.metric_values(base, "ceiling_eauc")),
        delta=delta, delta_half=delta_half, world_delta=world_delta, world_half=world_half,
        world_p=stats.p_value(per_world), closure=closure[0], closure_low=closure[1],
        closure_high=closure[2], against=against,
        paper=paper_delta(stage, variant, days) if against == "baseline" else math.nan))
  return rows


def all_rows(reports_dir: str = REPORTS) -> List[Row]:
  """Rows of every committed report, the largest designs (most worlds) first."""
  rows: List[Row] = []
  for path in sorted(glob.glob(os.path.join(reports_dir, "*", "tables.csv"))):
    rows += report_rows(os.path.dirname(path))
  return sorted(rows, key=lambda r: (-r.worlds, r.stage != "coarse", r.report, r.days,
                                     r.against != "baseline", r.variant))


def _signed(value: float, half: Optional[float] = None) -> str:
  if math.isnan(value):
    return "n/a"
  text = f"{value:+.4f}"
  return text if half is None or math.isnan(half) else f"{text} ± {half:.4f}"


def _plain(value: float) -> str:
  return "n/a" if math.isnan(value) else f"{value:.4f}"


def _kind(variant: str):
  """The registered teacher kind named `variant` (None for a kind no longer registered)."""
  from models import teacher_kinds
  return teacher_kinds.get(variant) if variant in teacher_kinds.names() else None


def _display(variant: str) -> str:
  kind = _kind(variant)
  return kind.display if kind is not None else variant


def _label(row: Row) -> str:
  """'coarse PFD', or 'coarse PFD over self-distillation' when the Δ is against the control."""
  text = f"{STAGES[row.stage]} {_display(row.variant)}"
  return text if row.against == "baseline" else f"{text} over {_display(row.against)}"


def render(rows: Sequence[Row]) -> str:
  """The generated block: the table and the picture's link."""
  lines = [BEGIN, "", f"![Δ eAUC of each comparison, with its 95% interval]({PICTURE})", "",
           "| comparison | world | days | worlds × seeds | baseline eAUC | teacher eAUC | "
           "ceiling eAUC | Δ eAUC, pairs | Δ eAUC, worlds as units (p) | gap closure | "
           "paper Δ AUC | verdict | report |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    world = "main" if r.world in ("main", "()", "nan") else r.world
    seeds = r.pairs // r.worlds if r.worlds else 0
    closure = ("n/a" if math.isnan(r.closure) else f"{r.closure:.2f}" + (
        "" if math.isnan(r.closure_low) else f" [{r.closure_low:.2f}, {r.closure_high:.2f}]"))
    by_worlds = (f"{_signed(r.world_delta, r.world_half)} ({r.world_p:.3f})"
                 if r.worlds >= 2 else "n/a")
    lines.append(
        f"| {_label(r)} | {world} | {r.days} | "
        f"{r.worlds} × {seeds} | {_plain(r.baseline_eauc)} | {_plain(r.teacher_eauc)} | "
        f"{_plain(r.ceiling_eauc)} | {_signed(r.delta, r.delta_half)} | {by_worlds} | "
        f"{closure} | {_signed(r.paper)} | **{r.verdict()}** | "
        f"[{r.report}]({r.report}/report.md) |")
  lines += ["", "Commands: " + "; ".join(
      f"[{name}]({name}/report.md): `{command}`"
      for name, command in dict((r.report, r.command) for r in rows).items()), "", END]
  return "\n".join(lines)


def plot(rows: Sequence[Row], path: str) -> None:
  """One picture: each comparison's Δ eAUC with the interval its verdict reads, the paper's Δ
  AUC beside it as a hollow diamond."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  figure, axes = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.4))
  for y, r in enumerate(rows):
    mean, half = r.interval()
    kind = _kind(r.variant)
    colour = kind.colour if kind is not None else "tab:grey"
    axes.errorbar(mean, y, xerr=half if not math.isnan(half) else None, fmt="o",
                  color=colour, capsize=3)
    if not math.isnan(r.paper):
      axes.plot(r.paper, y, "D", mfc="none", color="black", markersize=5)
  axes.axvline(0.0, color="black", linewidth=0.8)
  axes.set_yticks(range(len(rows)))
  axes.set_yticklabels([f"{_label(r)}, {r.days} d, "
                        f"{r.worlds}×{r.pairs // max(r.worlds, 1)} ({r.report})" for r in rows],
                       fontsize=8)
  axes.invert_yaxis()
  axes.set_xlabel("Δ eAUC against the baseline student, 95% interval (worlds as units from 3\n"
                  "worlds, else pairs); ◇ the paper's Δ AUC", fontsize=8)
  figure.tight_layout()
  files.write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
  plt.close(figure)


def main(argv: Sequence[str]) -> int:
  rows = all_rows()
  current = open(README).read()
  new = files.with_generated_block(current, BEGIN, END, render(rows), README)
  if "--check" in argv:
    if new != current:
      print(f"{README}: stale; run python -m experiments.paper_summary")
      return 1
    return 0
  plot(rows, os.path.join(REPORTS, PICTURE))
  files.write_text(README, new)
  print(f"wrote {README} ({len(rows)} comparisons) and {PICTURE}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

