"""The λ sweep and the post-click noise sweep.

λ sweep: coarse PFD, CVR PFD and CVR LUPI students at each --lambdas value (the paper: PFD is
robust to λ, LUPI degrades as λ grows). Noise sweep: CVR PFD's gain over the baseline on
worlds whose post-click signals get noisier (--noise_levels, one world each), i.e. as the
privileged features say less about conversion.
"""

import math
import os
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from data.plumbing import files
from data.stats import intervals
from experiments.paper_stats import Section
from experiments.paper_stats import metric_values
from experiments.paper_stats import paired_with_baseline
from experiments.paper_stats import rows_where
from experiments.paper_stats import stat_cells
from experiments.studies.base import Plan
from experiments.studies.base import Report
from experiments.studies.base import Study
from experiments.studies.base import Trial
from experiments.studies.tables import display
from models import teacher_kinds
from stages import catalogue

LAMBDA_SERIES = (("coarse", "pfd"), ("fine_cvr", "pfd"), ("fine_cvr", "lupi"))


class LambdaSweep(Study):
  name = "lambda"
  title = "λ sweep"

  def declare(self, plan: Plan) -> List[Trial]:
    trials: List[Trial] = []
    for seed in plan.seeds:
      for lam in (float(x) for x in plan.paper.lambdas):
        settings = (("distill_lambda", lam),)
        trials += [Trial(self.name, stage, variant, seed, plan.long_days, settings=settings)
                   for stage, variant in LAMBDA_SERIES]
    return trials

  def section(self, report: Report) -> Optional[Section]:
    frame = report.frame
    rows = frame[frame["study"] == self.name]
    if rows.empty:
      return None
    lambdas = sorted(rows["distill_lambda"].dropna().unique())
    lines: List[Dict[str, object]] = []
    # λ = 0 is the baseline student, when the study ran it (Tables A and B) on the same days.
    days = rows["days"].iloc[0]
    tables = frame[frame["study"].isin(["coarse", "cvr"])]
    baseline: Dict[str, float] = {"λ": 0.0}
    for stage, variant in LAMBDA_SERIES:
      base = rows_where(tables, stage=stage, variant="baseline", days=days)
      baseline.update(stat_cells(f"{stage} {display(variant)}", metric_values(base, "auc")))
      baseline.update(stat_cells(f"{stage} {display(variant)} teacher", []))
    if any(not math.isnan(v) for k, v in baseline.items() if k != "λ"):
      lines.append(dict(baseline))
    for lam in lambdas:
      line: Dict[str, object] = {"λ": float(lam)}
      for stage, variant in LAMBDA_SERIES:
        own = rows_where(rows, stage=stage, variant=variant, distill_lambda=lam)
        name = f"{stage} {display(variant)}"
        line.update(stat_cells(name, metric_values(own, "auc")))
        line.update(stat_cells(f"{name} teacher", metric_values(own, "teacher_auc")))
      lines.append(line)
    line_plot(rows, "distill_lambda", "auc", "λ", "student AUC",
              os.path.join(report.plots_dir, "lambda_sweep.png"))
    table = pd.DataFrame(lines)
    table["λ"] = [f"{lam:g}" if lam else "0 (baseline)" for lam in table["λ"]]
    return Section(table, ["", "Student AUC and its teacher's; λ = 0 is the baseline student.",
                           "", "![λ sweep](plots/lambda_sweep.png)"])


def line_plot(rows: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(figsize=(6, 4))
  for stage, variant in LAMBDA_SERIES:
    part = rows[(rows["stage"] == stage) & (rows["variant"] == variant)]
    stats = [(v, *intervals.mean_ci_over_seeds(g[y])) for v, g in part.groupby(x)]
    if stats:
      xs, means, halves = zip(*stats)
      axes.errorbar(xs, means, yerr=np.nan_to_num(halves), marker="o", capsize=3,
                    label=f"{stage} {display(variant)}",
                    color=teacher_kinds.get(variant).colour,
                    linestyle="--" if stage == "coarse" else "-")
  axes.set_xlabel(xlabel)
  axes.set_ylabel(ylabel)
  axes.legend()
  files.write_png(path, figure)


class NoiseSweep(Study):
  name = "noise"
  title = "Post-click noise sweep (CVR)"

  def declare(self, plan: Plan) -> List[Trial]:
    return [Trial(self.name, catalogue.FINE_CVR.name, v, seed, plan.long_days,
                  world=f"noise={noise}")
            for seed in plan.seeds for noise in plan.paper.noise_levels
            for v in ("baseline", "pfd")]

  def section(self, report: Report) -> Optional[Section]:
    frame = report.frame
    rows = frame[frame["study"] == self.name].copy()
    if rows.empty:
      return None
    rows["noise"] = rows["world"].str.split("=").str[1].astype(float)
    lines = []
    gains = []
    for noise in sorted(rows["noise"].unique()):
      at = rows[rows["noise"] == noise]
      pfd, base = paired_with_baseline(at, "pfd")
      gain = metric_values(pfd, "auc") - metric_values(base, "auc")
      gains.append((noise, *intervals.mean_ci_over_seeds(gain)))
      line: Dict[str, object] = {"post_click_noise": f"{noise:g}"}
      line.update(stat_cells("CVR baseline AUC", metric_values(base, "auc")))
      line.update(stat_cells("CVR PFD AUC", metric_values(pfd, "auc")))
      line.update(stat_cells("PFD teacher AUC", metric_values(pfd, "teacher_auc")))
      line.update(stat_cells("Δ AUC", gain))
      line.update(stat_cells("Δ eAUC", metric_values(pfd, "eauc") - metric_values(base, "eauc")))
      line["pairs"] = len(gain)
      lines.append(line)
    gain_plot(gains, os.path.join(report.plots_dir, "noise_sweep.png"))
    return Section(pd.DataFrame(lines), ["", "![noise sweep](plots/noise_sweep.png)"])


def gain_plot(gains, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(figsize=(6, 4))
  xs, means, halves = zip(*gains)
  axes.errorbar(xs, means, yerr=np.nan_to_num(halves), marker="o", capsize=3)
  axes.axhline(0.0, color="grey", linewidth=0.8)
  axes.set_xscale("log")
  axes.set_xlabel("post_click_noise (higher: less informative privileged features)")
  axes.set_ylabel("CVR AUC gain of PFD over baseline")
  files.write_png(path, figure)
