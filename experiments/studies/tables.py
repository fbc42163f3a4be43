"""Tables A and B: every teacher kind's student beside the baseline, its ceiling and its teacher.

Table A is the coarse two-tower CTR student, on --short_days and on every day before the eval
day (the paper's 1 and 10 days); Table B the fine CVR student on every day before the eval day
(the paper's 30). Each row: the student's AUC and eAUC, the teacher's, the oracle ceiling, the
linear reference, the paired deltas against the baseline student, the pairs a paired test
would need, and gap closure. The kinds are the registry's (`models.teacher_kinds`), in its
order, with its display names and plot colours: a new kind appears here with no edit.
"""

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from data.plumbing import files
from data.stats import intervals
from experiments import paper_learning
from experiments import paper_worlds
from experiments.paper_stats import Section
from experiments.paper_stats import gap_closure
from experiments.paper_stats import interval_cells
from experiments.paper_stats import metric_values
from experiments.paper_stats import p_value
from experiments.paper_stats import paired_deltas
from experiments.paper_stats import pairs_for_power
from experiments.paper_stats import reference_auc
from experiments.paper_stats import rows_where
from experiments.paper_stats import stat_cells
from experiments.paper_stats import world_deltas
from experiments.studies.base import LINEAR
from experiments.studies.base import Plan
from experiments.studies.base import Report
from experiments.studies.base import Study
from experiments.studies.base import Trial
from models import teacher_kinds
from stages import catalogue

# The paper's figures: student AUC (teacher AUC); none where the paper reports none.
PAPER_CTR_1DAY = {"baseline": "0.6625", "lupi": "0.6637 (0.6687)", "md": "0.6704 (0.6892)",
                  "pfd": "0.6712 (0.6921)", "pfd_md": "0.6745 (0.7110)"}
PAPER_CTR_10DAYS = {"baseline": "0.7042", "pfd_md": "0.7160 (0.7411)"}
PAPER_CVR_30DAYS = {"baseline": "0.9040", "lupi": "0.8965 (0.9651)", "md": "0.9052 (0.9058)",
                    "pfd": "0.9084 (0.9901)", "pfd_md": "0.9082 (0.9911)"}
PAPER_GAP_CLOSURE = {("coarse", "pfd_md"): "0.25 (1 day)", ("fine_cvr", "pfd"): "0.05 (30 days)"}
AUC_NOTES = ["", "AUC and eAUC on the eval day; ceiling: the oracle's true probability as the "
             "score on the same rows; linear: the logistic-regression reference on the same "
             "serving inputs; Δ: paired on (world seed, seed) against the baseline student, "
             "mean ± 95% t-interval over the Δ pairs, p of a paired t-test. Worlds as units: "
             "each world's mean Δ eAUC, then a t-interval over the worlds (the world a random "
             "effect: its pairs share one draw), the figure to trust for a claim. Gap closure: "
             "mean(student - baseline) / mean(teacher - baseline), a ratio of means, with a 95% "
             "bootstrap interval over worlds; n/a unless the teacher's gap is significant. Pairs "
             "for 80% power: how many (world seed, seed) pairs a paired t-test at 5% would "
             "need to detect the Δ eAUC seen here at the spread seen here. n/a: not measured by "
             "these runs."]


def display(variant: str) -> str:
  """A variant's name in the report (the registry's; the linear reference's own)."""
  return "linear reference" if variant == LINEAR else teacher_kinds.get(variant).display


def kinds_run(frame: pd.DataFrame, **where) -> List[str]:
  """The registered kinds with rows in `frame` (baseline always), in registry order."""
  return [k for k in teacher_kinds.names()
          if k == teacher_kinds.BASELINE or not rows_where(frame, variant=k, **where).empty]


def study_variants(plan: Plan, stage: catalogue.Stage) -> List[str]:
  """The variants a table trains: baseline, --variants the stage takes, the reference."""
  variants = [v for v in stage.variants()
              if v == teacher_kinds.BASELINE or v in plan.paper.variants]
  return variants + ([LINEAR] if plan.paper.linear_reference else [])


def auc_table(frame: pd.DataFrame, stage: str, study: str, days: Sequence[str],
              paper: Dict[str, Dict[str, str]]) -> pd.DataFrame:
  """One row per (method, training days): the student's AUC and eAUC beside its ceiling, the
  linear reference and its teacher; paired Δ AUC and Δ eAUC vs the baseline student with n
  pairs; gap closure; the paper's figure for those days (`paper`: days -> variant -> text)."""
  rows = []
  for day in days:
    where = dict(study=study, stage=stage, days=day)
    for variant in kinds_run(frame, **where):
      own = rows_where(frame, variant=variant, **where)
      row: Dict[str, object] = {"method": display(variant), "days": day, "n": len(own)}
      for metric, name in (("auc", "AUC"), ("eauc", "eAUC"), ("teacher_auc", "teacher AUC"),
                           ("teacher_eauc", "teacher eAUC"), ("ceiling_auc", "ceiling AUC"),
                           ("ceiling_eauc", "ceiling eAUC")):
        row.update(stat_cells(name, metric_values(own, metric)))
      row.update(stat_cells("linear AUC", reference_auc(frame, **where)))
      if variant != teacher_kinds.BASELINE:
        row.update(delta_cells(frame, variant, **where))
      row["paper"] = paper.get(day, {}).get(variant, "")
      rows.append(row)
  table = pd.DataFrame(rows)
  return table[[c for c in table.columns if c != "paper"] + ["paper"]] if rows else table


def delta_cells(frame: pd.DataFrame, variant: str, **where) -> Dict[str, object]:
  """The variant against the baseline student: paired Δ AUC and Δ eAUC over the pairs (world
  seed, seed) with their p; Δ eAUC with the world as the unit (each world's mean Δ; a t
  interval over worlds, the random effect of the world); the pairs a t-test would need for 80%
  power; gap closure as a ratio of means with a bootstrap over worlds."""
  cells: Dict[str, object] = {}
  for metric, name in (("auc", "Δ AUC"), ("eauc", "Δ eAUC")):
    cells.update(stat_cells(name, paired_deltas(frame, variant, metric, **where)))
  eauc = paired_deltas(frame, variant, "eauc", **where)
  cells["Δ pairs"] = len(paired_deltas(frame, variant, "auc", **where))
  cells["p (pairs)"] = p_value(eauc)
  by_world = world_deltas(frame, variant, "eauc", **where)
  cells.update(stat_cells("Δ eAUC, worlds as units", by_world))
  cells["worlds"] = len(by_world)
  cells["p (worlds)"] = p_value(by_world)
  cells["pairs for 80% power"] = pairs_for_power(eauc)
  for metric, name in (("auc", "gap closure"), ("eauc", "gap closure, eAUC")):
    cells.update(interval_cells(name, *gap_closure(frame, variant, metric, **where)))
  return cells


def auc_bars(frame: pd.DataFrame, stage: str, study: str, days: Sequence[str],
             path: str) -> None:
  """Student AUC per method (one panel per training-days column) with 95% CIs over seeds; the
  dashed line is the baseline student."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(1, len(days), figsize=(4.5 * len(days), 3.6), squeeze=False)
  run = kinds_run(frame, study=study, stage=stage)
  for axis, day in zip(axes[0], days):
    stats = [intervals.mean_ci_over_seeds(
        rows_where(frame, study=study, stage=stage, variant=v, days=day)["auc"]) for v in run]
    means, halves = (np.array(x, float) for x in zip(*stats))
    # Points, not bars: AUCs differ in the third decimal, and a bar's length would mislead.
    for k, variant in enumerate(run):
      axis.errorbar([display(variant)], means[k:k + 1], yerr=np.nan_to_num(halves[k:k + 1]),
                    fmt="o", capsize=4, color=teacher_kinds.get(variant).colour)
    if np.isfinite(means[0]):
      axis.axhline(means[0], color="grey", linewidth=0.8, linestyle="--")
    axis.set_title(f"{stage}, days {day}")
    axis.set_ylabel("student AUC")
    axis.tick_params(axis="x", labelrotation=30)
  files.write_png(path, figure)


class CoarseTable(Study):
  """Table A: the coarse student on --short_days and on every day before the eval day."""
  name = "coarse"
  title = "Table A: coarse CTR (two-tower student)"
  table = True

  def declare(self, plan: Plan) -> List[Trial]:
    columns = {"short": plan.short_days, "long": plan.long_days}
    variants = study_variants(plan, catalogue.COARSE)
    # The stages whose exports teach a variant here (pfd_md: the fine CTR model), first.
    teachers = sorted({stage for v in variants if v != LINEAR
                       for stage in [teacher_kinds.get(v).export_stage(catalogue.COARSE.name)]
                       if stage is not None})
    trials: List[Trial] = []
    for seed in plan.seeds:
      for train_days in sorted({columns[c] for c in plan.paper.coarse_columns}, key=len):
        trials += [Trial(self.name, stage, "baseline", seed, train_days) for stage in teachers]
        trials += [Trial(self.name, catalogue.COARSE.name, v, seed, train_days)
                   for v in variants]
    return trials

  def section(self, report: Report) -> Optional[Section]:
    frame = report.frame
    rows = rows_where(frame, study=self.name, stage="coarse")
    if rows.empty:
      return None
    days = sorted(rows["days"].unique(), key=paper_learning.days_order)
    auc_bars(frame, "coarse", self.name, days, os.path.join(report.plots_dir, "table_a.png"))
    # The paper's 1-day figures beside a 1-day column, its 10-day ones beside a longer last one.
    paper = {d: PAPER_CTR_1DAY for d in days if "-" not in d}
    if "-" in days[-1]:
      paper[days[-1]] = PAPER_CTR_10DAYS
    return Section(auc_table(frame, "coarse", self.name, days, paper), AUC_NOTES + [
        "Paper: 1 day beside the shortest column, 10 days beside the longest.", "",
        "![Table A](plots/table_a.png)"])


def cvr_world_days(plan: Plan) -> Tuple[int, ...]:
  """Every day before the eval day of the CVR world (its n_days may differ from the main
  world's)."""
  knobs = paper_worlds.name_knobs(plan.paper.cvr_world)
  n_days = int(knobs.get("n_days", len(plan.days)))
  return tuple(range(1, n_days))


class CvrTable(Study):
  """Table B: the fine CVR student on every day before the eval day."""
  name = "cvr"
  title = "Table B: fine CVR (trained on clicks)"
  table = True

  def declare(self, plan: Plan) -> List[Trial]:
    variants = study_variants(plan, catalogue.FINE_CVR)
    world = plan.paper.cvr_world or paper_worlds.MAIN
    days = plan.long_days if world == paper_worlds.MAIN else cvr_world_days(plan)
    trials: List[Trial] = []
    for seed in plan.seeds:
      if plan.paper.ctcvr:
        trials.append(Trial(self.name, catalogue.FINE_CTR.name, "baseline", seed, days,
                            world=world))
      trials += [Trial(self.name, catalogue.FINE_CVR.name, v, seed, days, world=world)
                 for v in variants]
    return trials

  def section(self, report: Report) -> Optional[Section]:
    frame = report.frame
    rows = rows_where(frame, study=self.name, stage="fine_cvr")
    if rows.empty:
      return None
    days = sorted(rows["days"].unique(), key=paper_learning.days_order)
    auc_bars(frame, "fine_cvr", self.name, days, os.path.join(report.plots_dir, "table_b.png"))
    return Section(auc_table(frame, "fine_cvr", self.name, days,
                             {d: PAPER_CVR_30DAYS for d in days}),
                   AUC_NOTES + ["Paper: 30 days.", "", "![Table B](plots/table_b.png)"])
