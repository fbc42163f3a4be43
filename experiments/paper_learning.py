"""The paper report's learning curves: how far each model is from what its inputs allow.

Two views of the baseline students (and the distilled ones beside them), issue 11's question
"do the models reach their ceiling?":
  - against optimizer steps: the validation AUC at each check of validation stopping (the
    `learning_curve` of every run's metrics.json), one thin line per (world seed, seed), the
    marker at the check whose weights were kept;
  - against training days: the eval-day AUC and eAUC of each stage's baseline over the
    training-days columns the study ran, beside the oracle ceiling and the linear reference.
"""

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from data.plumbing import files
from data.stats import intervals
from experiments.paper_stats import Section
from experiments.paper_stats import metric_values
from experiments.paper_stats import reference_auc
from experiments.paper_stats import rows_where
from experiments.paper_stats import stat_cells
from models import teacher_kinds

LEARNING_CURVE = "learning_curve"
# (study, stage, title) of the curves drawn, in the report's order.
PANELS = (("coarse", "coarse", "coarse two-tower"), ("cvr", "fine_cvr", "fine CVR"),
          ("coarse", "fine_ctr", "fine CTR (coarse teacher)"))
REFERENCE_COLOUR = "tab:grey"  # the linear reference's; every teacher kind has its own


def colours() -> Dict[str, str]:
  """Each variant's colour: the teacher-kind registry's, and the linear reference's."""
  return {**{k.name: k.colour for k in teacher_kinds.all_kinds()}, "reference": REFERENCE_COLOUR}


def days_order(days: str) -> int:
  """A training-days label ("1", "1-7") as its number of days, for ordering."""
  first, _, last = days.partition("-")
  return int(last or first) - int(first) + 1


def learning_section(frame: pd.DataFrame, plots_dir: str) -> Optional[Section]:
  """The baselines' eval AUC and eAUC per training-days column beside ceiling and linear
  reference, and the two learning-curve plots; None when no run kept a curve."""
  if frame.empty or LEARNING_CURVE not in frame:
    return None
  rows = []
  for study, stage, title in PANELS:
    base = rows_where(frame, study=study, stage=stage, variant="baseline")
    for days in sorted(base["days"].unique(), key=days_order):
      own = rows_where(base, days=days)
      row = {"model": title, "days": days, "n": len(own)}
      row.update(stat_cells("AUC", metric_values(own, "auc")))
      row.update(stat_cells("eAUC", metric_values(own, "eauc")))
      row.update(stat_cells("ceiling AUC", metric_values(own, "ceiling_auc")))
      row.update(stat_cells("linear AUC", reference_auc(frame, study=study, stage=stage,
                                                        days=days)))
      row.update(stat_cells("best step", metric_values(own, "best_step")))
      row.update(stat_cells("stopped step", metric_values(own, "stopped_step")))
      rows.append(row)
  if not rows:
    return None
  _curves_by_step(frame, os.path.join(plots_dir, "learning_steps.png"))
  _auc_by_days(frame, os.path.join(plots_dir, "learning_days.png"))
  return Section(pd.DataFrame(rows), [
      "", "Baseline students on the eval day; best / stopped step: the validation check whose "
      "weights were kept, and the last check (validation stopping; n/a where it was off, e.g. "
      "CVR when the held-out rows hold fewer than --min_validation_positives). Ceiling: the "
      "oracle's probability as the score; linear: the logistic-regression reference on the "
      "same rows.",
      "", "![validation AUC against steps](plots/learning_steps.png)", "",
      "![eval AUC against training days](plots/learning_days.png)"])


def _curves_by_step(frame: pd.DataFrame, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = [(study, stage, title, days) for study, stage, title in PANELS
            for days in sorted(rows_where(frame, study=study, stage=stage)["days"].unique(),
                               key=days_order)]
  figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.6),
                              squeeze=False)
  for axis, (study, stage, title, days) in zip(axes[0], panels):
    runs = rows_where(frame, study=study, stage=stage, days=days)
    for variant, colour in colours().items():
      labelled = False
      for _, run in rows_where(runs, variant=variant).iterrows():
        curve = run[LEARNING_CURVE] if isinstance(run[LEARNING_CURVE], list) else []
        if not curve:
          continue
        steps = [point["step"] for point in curve]
        aucs = [point["auc"] for point in curve]
        axis.plot(steps, aucs, color=colour, linewidth=0.7, alpha=0.6,
                  label=None if labelled else variant)
        best = int(np.argmax(aucs)) if not np.all(np.isnan(aucs)) else None
        if best is not None:
          axis.plot(steps[best], aucs[best], "o", color=colour, markersize=3)
        labelled = True
    if not any(isinstance(c, list) and c for c in runs[LEARNING_CURVE]):
      axis.text(0.5, 0.5, "no validation curve:\nstopping was off\n(metrics.json: "
                "validation_skipped)", ha="center", va="center", transform=axis.transAxes)
    axis.set_title(f"{title}, days {days}")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("validation AUC")
    axis.legend(fontsize=7)
  files.write_png(path, figure)


def _auc_by_days(frame: pd.DataFrame, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6), squeeze=False)
  for axis, (study, stage, title) in zip(axes[0], PANELS):
    base = rows_where(frame, study=study, stage=stage, variant="baseline")
    days = sorted(base["days"].unique(), key=days_order)
    xs = [days_order(d) for d in days]
    for metric, label, style in (("auc", "DNN AUC", "o-"), ("eauc", "DNN eAUC", "s-"),
                                 ("ceiling_auc", "ceiling AUC", "k--")):
      _errorbars(axis, xs, [metric_values(rows_where(base, days=d), metric) for d in days],
                 style, label)
    _errorbars(axis, xs, [reference_auc(frame, study=study, stage=stage, days=d) for d in days],
               "^:", "linear AUC")
    axis.set_title(title)
    axis.set_xlabel("training days")
    axis.set_ylabel("eval-day AUC")
    axis.legend(fontsize=7)
  files.write_png(path, figure)


def _errorbars(axis, xs: Sequence[int], values: List[np.ndarray], style: str,
               label: str) -> None:
  stats = [intervals.mean_ci_over_seeds(v) if len(v) else (np.nan, np.nan) for v in values]
  means = np.array([s[0] for s in stats], float)
  if not len(xs) or np.all(np.isnan(means)):
    return
  halves = np.nan_to_num(np.array([s[1] for s in stats], float))
  axis.errorbar(xs, means, yerr=halves, fmt=style, capsize=3, label=label, markersize=4)

