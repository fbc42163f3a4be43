"""Compare's plots: funnel survival (stages in funnel order), online outcomes per 1k
requests, share of the oracle.

Each is a grouped-bar figure of compare_stats' long table (mean with 95% CI error bars per
variant), written atomically as PNG.
"""

import os
from typing import List, Sequence

import numpy as np
import pandas as pd

from data.plumbing import files
from experiments import funnel as funnel_lib


def _grouped_bars(axes, table: pd.DataFrame, metric_names: Sequence[str],
                  variants: Sequence[str], tick_labels: Sequence[str]) -> None:
  """Bars for each metric (x) and variant (colour), with 95% CI error bars where known."""
  width = 0.8 / max(1, len(variants))
  positions = np.arange(len(metric_names))
  for index, label in enumerate(variants):
    rows = table[table.variant == label].set_index("metric").reindex(metric_names)
    means = rows["mean"].to_numpy(np.float64)
    errors = np.stack([means - rows["ci_lo"].to_numpy(np.float64),
                       rows["ci_hi"].to_numpy(np.float64) - means])
    axes.bar(positions + (index - (len(variants) - 1) / 2) * width, means, width,
             yerr=np.nan_to_num(errors), capsize=3, label=label)
  axes.set_xticks(positions, tick_labels)


def _plot_bars(table, variants, metric_names, path, title, ylabel, strip_prefix) -> bool:
  """One grouped-bar figure of `metric_names`; False (and nothing written) if none exist."""
  import matplotlib.pyplot as plt
  metric_names = [name for name in metric_names if name in set(table["metric"])]
  if not metric_names:
    return False
  width_inches = min(12, max(5, 1.2 * len(metric_names) * len(variants)))
  figure, axes = plt.subplots(figsize=(width_inches, 4))
  _grouped_bars(axes, table, metric_names, variants,
                [name.removeprefix(strip_prefix) for name in metric_names])
  axes.set_title(title)
  axes.set_ylabel(ylabel)
  axes.legend(fontsize="small")
  files.write_png(path, figure)
  return True


def _plot_online_per_1k(table, variants, path) -> bool:
  """Expected clicks, conversions and GMV per 1k requests, one panel each (scales differ)."""
  import matplotlib.pyplot as plt
  names = [f"online/exp_{outcome}_per_1k" for outcome in ("clicks", "conversions", "gmv")]
  names = [name for name in names if name in set(table["metric"])]
  if not names:
    return False
  figure, panels = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
  for axes, name in zip(panels[0], names):
    _grouped_bars(axes, table, [name], variants, [""])
    axes.set_title(name.removeprefix("online/exp_").replace("_per_1k", " per 1k requests"))
  panels[0][0].legend(fontsize="small")
  files.write_png(path, figure)
  return True


def write_plots(table: pd.DataFrame, variants: Sequence[str], plots_dir: str) -> List[str]:
  """Funnel survival, online outcomes per 1k, share of the oracle; returns the files made."""
  import matplotlib
  matplotlib.use("Agg")
  metric_names = list(dict.fromkeys(table["metric"]))
  made = []
  survival = [f"survival/{stage}" for stage in funnel_lib.STAGES]  # in funnel order
  if _plot_bars(table, variants, [m for m in survival if m in metric_names],
                os.path.join(plots_dir, "funnel_survival.png"),
                "Share of the oracle's best items surviving each stage", "survival",
                "survival/"):
    made.append("funnel_survival.png")
  if _plot_online_per_1k(table, variants, os.path.join(plots_dir, "online_per_1k.png")):
    made.append("online_per_1k.png")
  if _plot_bars(table, variants,
                [m for m in metric_names if m.startswith("online/share_of_oracle_")],
                os.path.join(plots_dir, "share_of_oracle.png"),
                "Share of what the oracle's best page would earn", "share",
                "online/share_of_oracle_"):
    made.append("share_of_oracle.png")
  return made
