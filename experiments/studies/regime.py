"""The regime map of the paper study: where CVR PFD helps, as heatmaps and a table.

`experiments.paper --studies=regime` trains the fine CVR baseline, PFD and PFD+MD students on
worlds that differ in two knobs, conversion sparsity (`conversion_bias`) and the privileged
signal's strength (`purchase_intent_sd` by default, or `post_click_noise`), for several numbers
of training days. Each cell's figure is the student's eAUC minus the baseline student's on the
same pair (world seed, training seed), mean ± 95% t-interval over the pairs: eAUC because at
Taobao's sparsity the realised conversions are too few for AUC to see a few thousandths
(docs/world.md). One heatmap per (variant, days): rows sparsity, columns strength; a cell whose
interval excludes 0 is marked.
"""

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from data.plumbing import files
from experiments import paper_worlds
from experiments.paper_stats import Section
from experiments.paper_stats import metric_values
from experiments.paper_stats import paired_deltas
from experiments.paper_stats import rows_where
from experiments.paper_stats import stat
from experiments.paper_stats import stat_cells
from experiments.studies.base import Plan
from experiments.studies.base import Report
from experiments.studies.base import Study
from experiments.studies.base import Trial
from stages import catalogue

STAGE = catalogue.FINE_CVR.name
VARIANTS = ("baseline", "pfd", "pfd_md")
GAINS = (("pfd", "PFD"), ("pfd_md", "PFD+MD"))
SPARSITY = "conversion_bias"


def regime_worlds(paper: Any) -> List[str]:
  """The regime map's worlds: one per (conversion_bias, strength), named by those knobs."""
  return [paper_worlds.world_name([(SPARSITY, bias), (paper.regime_strength_knob, strength)])
          for bias in paper.regime_conversion_biases for strength in paper.regime_strengths]


def regime_day_counts(paper: Any, days: Sequence[int]) -> List[int]:
  """--regime_days, capped at the days before the eval day (the last day), without repeats."""
  return sorted({min(int(n), len(days) - 1) for n in paper.regime_days})


class RegimeStudy(Study):
  """CVR baseline, PFD and PFD+MD on each regime world, for each training-days count."""
  name = "regime"
  title = "Regime map: where CVR PFD helps (eAUC gain over the baseline student)"
  only_when_named = True

  def declare(self, plan: Plan) -> List[Trial]:
    return [Trial(self.name, STAGE, variant, seed, tuple(plan.days[:n]), world=world)
            for seed in plan.seeds for world in regime_worlds(plan.paper)
            for n in regime_day_counts(plan.paper, plan.days) for variant in VARIANTS]

  def world_knobs(self, paper: Any) -> Optional[str]:
    return paper.regime_world_flagfile

  def section(self, report: Report) -> Optional[Section]:
    return regime_section(report.frame, report.plots_dir)


def strength_knob(rows: pd.DataFrame) -> str:
  """The world knob the map sweeps besides conversion_bias (a column of the trial rows)."""
  names = [name.split("=", 1)[0] for name in rows["world"].iloc[0].split(",")]
  others = [name for name in names if name != SPARSITY]
  return others[0] if others else SPARSITY


def regime_table(rows: pd.DataFrame) -> pd.DataFrame:
  """One row per (days, conversion_bias, strength): the baseline's eAUC, AUC and ceiling eAUC,
  the conversion rate of its eval clicks where known, and each variant's paired Δ eAUC and Δ AUC
  with n pairs and whether the interval excludes 0."""
  knob = strength_knob(rows)
  lines = []
  cells = rows[["days", SPARSITY, knob]].drop_duplicates()
  for days, bias, strength in sorted(cells.itertuples(index=False),
                                     key=lambda c: (len(c[0]), c[0], -c[1], c[2])):
    where = dict(study="regime", stage=STAGE, days=days, **{SPARSITY: bias, knob: strength})
    base = rows_where(rows, variant="baseline", **where)
    line: Dict[str, object] = {"days": days, SPARSITY: bias, knob: strength}
    line.update(stat_cells("baseline eAUC", metric_values(base, "eauc")))
    line.update(stat_cells("baseline AUC", metric_values(base, "auc")))
    line.update(stat_cells("ceiling eAUC", metric_values(base, "ceiling_eauc")))
    for variant, name in GAINS:
      teacher = metric_values(rows_where(rows, variant=variant, **where), "teacher_eauc")
      line.update(stat_cells(f"{name} teacher eAUC", teacher))
      eauc = paired_deltas(rows, variant, "eauc", **where)
      auc = paired_deltas(rows, variant, "auc", **where)
      line.update(stat_cells(f"Δ eAUC {name}", eauc))
      line.update(stat_cells(f"Δ AUC {name}", auc))
      line[f"{name} pairs"] = len(auc)
      mean, half, n = stat(eauc)
      line[f"{name} eAUC CI excludes 0"] = bool(abs(mean) > half) if n > 1 else False
    lines.append(line)
  return pd.DataFrame(lines)


def regime_section(frame: pd.DataFrame, plots_dir: str) -> Optional[Section]:
  rows = frame[frame["study"] == "regime"] if "study" in frame else frame.iloc[:0]
  if rows.empty:
    return None
  table = regime_table(rows)
  notes = ["", "Δ: the student's figure minus the baseline student's on the same (world seed, "
           "training seed), mean ± 95% t-interval. eAUC weights every eval click by the "
           "oracle's P(convert | click), so it is free of the label noise that dominates AUC "
           "when conversions are rare. conversion_bias: lower is sparser (-4.5 dense, -8.8 "
           "Taobao); the other world knobs come from --regime_world_flagfile.", ""]
  if table.filter(like="Δ eAUC").isna().all().all():
    notes += ["These runs measured no eAUC: the heatmaps show Δ AUC.", ""]
  for variant, name in GAINS:
    path = os.path.join(plots_dir, f"regime_{variant}.png")
    if heatmaps(table, name, path):
      notes += [f"![regime map, {name}](plots/regime_{variant}.png)", ""]
  return Section(table, notes)


def _grid(part: pd.DataFrame, knob: str, column: str) -> Tuple[List[float], List[float],
                                                                  np.ndarray]:
  biases = sorted(part[SPARSITY].unique(), reverse=True)  # dense first
  strengths = sorted(part[knob].unique())
  grid = np.full((len(biases), len(strengths)), np.nan)
  for line in part.itertuples(index=False):
    line_dict = line._asdict()
    grid[biases.index(getattr(line, SPARSITY)), strengths.index(line_dict[knob])] = (
        line_dict[column])
  return biases, strengths, grid


def heatmaps(table: pd.DataFrame, name: str, path: str) -> bool:
  """One panel per training-days value: Δ eAUC of `name` over sparsity x strength (Δ AUC when
  the runs measured no eAUC), annotated mean ± half-width, * where the interval excludes 0.
  False when there is nothing to draw."""
  column = next((c for c in (f"Δ eAUC {name}", f"Δ AUC {name}")
                 if c in table and table[c].notna().any()), None)
  if column is None:
    return False
  metric = column.split()[1]
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  knob = [c for c in table.columns[:3] if c not in ("days", SPARSITY)][0]
  days = list(dict.fromkeys(table["days"]))
  limit = float(np.nanmax(np.abs(table[column]))) or 1e-4
  figure, axes = plt.subplots(1, len(days), figsize=(4.2 * len(days), 3.6), squeeze=False)
  renamed = table.rename(columns={column: "gain", f"{column} ±": "half"})
  for axis, day in zip(axes[0], days):
    part = renamed[renamed["days"] == day]
    biases, strengths, gains = _grid(part, knob, "gain")
    _, _, halves = _grid(part, knob, "half")
    image = axis.imshow(gains, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), gain in np.ndenumerate(gains):
      if not math.isnan(gain):
        half = halves[i, j]
        star = "*" if not math.isnan(half) and abs(gain) > half else ""
        axis.text(j, i, f"{gain:+.4f}{star}\n±{half:.4f}", ha="center", va="center",
                  fontsize=7)
    axis.set_xticks(range(len(strengths)), [f"{s:g}" for s in strengths])
    axis.set_yticks(range(len(biases)), [f"{b:g}" for b in biases])
    axis.set_xlabel(knob)
    axis.set_ylabel("conversion_bias (down: sparser)")
    axis.set_title(f"{name} Δ {metric}, days {day}")
    figure.colorbar(image, ax=axis, shrink=0.8)
  files.write_png(path, figure)
  return True
