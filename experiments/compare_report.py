"""Compare's report: tables as DataFrames of numbers first, Markdown rendered from them last.

`metrics_frame`, `deltas_frame`, `methods_frame` and `runs_frame` reshape compare_stats' long
table (and the runs) into the report's tables; tests read those numbers. `report_markdown`
turns them into report.md, and nothing else formats a number.
"""

import math
from typing import Dict, List, Sequence

import pandas as pd

from experiments.compare_runs import ReplayRun
from experiments.compare_stats import BootstrapOptions

METRIC_STATS = ("mean", "ci_lo", "ci_hi", "n_seeds")
DELTA_STATS = ("delta", "delta_lo", "delta_hi", "rel_delta", "rel_lo", "rel_hi")


# ---------------------------------------------------------------------------------------------
# Tables (numbers)
# ---------------------------------------------------------------------------------------------


def _pivot(table: pd.DataFrame, variants: Sequence[str], stats: Sequence[str]) -> pd.DataFrame:
  """One row per metric (first-seen order), columns (variant, stat); NaN where a variant lacks
  the metric."""
  metrics = list(dict.fromkeys(table["metric"]))
  wide = table.pivot(index="metric", columns="variant", values=list(stats))
  wide = wide.swaplevel(axis=1).reindex(index=metrics, columns=pd.MultiIndex.from_product(
      [list(variants), list(stats)], names=["variant", "stat"]))
  return wide.astype(float)


def metrics_frame(table: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame:
  """Every metric per variant: mean, 95% CI bounds and seeds (0 seeds: NaN everywhere)."""
  return _pivot(table, variants, METRIC_STATS)


def deltas_frame(table: pd.DataFrame, variants: Sequence[str], baseline: str) -> pd.DataFrame:
  """Every metric's delta vs the baseline per other variant: absolute and relative with CIs."""
  return _pivot(table, [label for label in variants if label != baseline], DELTA_STATS)


def methods_frame(table: pd.DataFrame, column: str) -> pd.DataFrame:
  """How many metrics of each variant used each interval method (`ci_method` or
  `delta_method`): columns variant, method, n_metrics."""
  rows = []
  for label, group in table.groupby("variant", sort=False):
    for method, count in group[column].dropna().value_counts().items():
      rows.append({"variant": label, "method": method, "n_metrics": int(count)})
  return pd.DataFrame(rows, columns=["variant", "method", "n_metrics"])


def runs_frame(runs: Sequence[ReplayRun]) -> pd.DataFrame:
  return pd.DataFrame([{"run dir": run.run_dir, "label": run.label, "seed": run.seed,
                        "day": run.day, "world hash": run.world_hash} for run in runs])


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _missing(value) -> bool:
  return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: float, signed: bool = False) -> str:
  if _missing(value):
    return "-"
  return f"{value:+.4g}" if signed else f"{value:.4g}"


def _interval(low: float, high: float, signed: bool = False) -> str:
  if _missing(low) or _missing(high):
    return ""
  return f" [{_number(low, signed)}, {_number(high, signed)}]"


def _percent_interval(low: float, high: float) -> str:
  if math.isnan(low) or math.isnan(high):
    return ""
  return f" [{low:+.2%}, {high:+.2%}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def _metric_cell(stats: pd.Series) -> str:
  if math.isnan(stats["n_seeds"]):
    return ""
  return _number(stats["mean"]) + _interval(stats["ci_lo"], stats["ci_hi"])


def _delta_cell(stats: pd.Series) -> str:
  if math.isnan(stats["delta"]):
    return ""
  relative = ("" if math.isnan(stats["rel_delta"]) else
              f" ({stats['rel_delta']:+.2%}{_percent_interval(stats['rel_lo'], stats['rel_hi'])})")
  return (_number(stats["delta"], True) + _interval(stats["delta_lo"], stats["delta_hi"], True)
          + relative)


def _render(frame: pd.DataFrame, header: List[str], cell) -> str:
  variants = list(dict.fromkeys(frame.columns.get_level_values("variant")))
  rows = [[metric] + [cell(frame.loc[metric, label]) for label in variants]
          for metric in frame.index]
  return markdown_table(header, rows)


def metrics_markdown(frame: pd.DataFrame, variants: Dict[str, List[ReplayRun]]) -> str:
  """metrics_frame as Markdown: mean [95% CI] per variant."""
  header = ["metric"] + [f"{label} ({len(runs)} seed{'s' * (len(runs) > 1)})"
                         for label, runs in variants.items()]
  return _render(frame, header, _metric_cell)


def deltas_markdown(frame: pd.DataFrame, baseline: str) -> str:
  """deltas_frame as Markdown: absolute [CI] (relative [CI]) per variant."""
  others = list(dict.fromkeys(frame.columns.get_level_values("variant")))
  return _render(frame, ["metric"] + [f"{label} - {baseline}" for label in others], _delta_cell)


def methods_markdown(frame: pd.DataFrame) -> str:
  lines = []
  for label, rows in frame.groupby("variant", sort=False):
    lines.append(f"- {label}: " + "; ".join(
        f"{row.method} ({row.n_metrics} metric{'s' * (row.n_metrics > 1)})"
        for row in rows.itertuples()))
  return "\n".join(lines)


_RESAMPLED_UNITS = {"user": "users (all requests of a resampled user together)",
                    "request": "requests"}


def interval_note(options: BootstrapOptions) -> str:
  """The report's paragraph on how every interval was computed."""
  return (
      "Variants with several seeds: mean over seeds, Student-t 95% CI. Variants with one "
      f"seed: percentile bootstrap ({options.n_boot} replicates, seed {options.seed}) over "
      f"{_RESAMPLED_UNITS[options.unit]} of the per-request outcomes, for the metrics "
      "per_request.parquet recomputes; other metrics have no CI. Deltas: paired by seed (t) "
      "when >= 2 seeds are shared; Welch's t when both sides have >= 2 seeds but share fewer; "
      "otherwise a bootstrap of one run pair's per-request outcomes (the same seed if "
      "possible), paired by request_id when both runs replayed the same requests. Relative "
      "deltas at the seed level divide the absolute CI by the baseline mean.")


def unavailable_markdown(runs: Sequence[ReplayRun]) -> str:
  """The figures some run could not compute (real logs have no oracle), with the reason;
  their cells read '-', never a zero."""
  reasons: Dict[str, str] = {}
  for run in runs:
    reasons.update(run.unavailable)
  if not reasons:
    return ""
  rows = [[name, reason] for name, reason in sorted(reasons.items())]
  return "## Unavailable figures\n\n" + markdown_table(["metric", "why"], rows)


def report_markdown(table: pd.DataFrame, variants: Dict[str, List[ReplayRun]], baseline: str,
                    options: BootstrapOptions, plot_names: Sequence[str]) -> str:
  """The whole report.md, rendered from the frames above."""
  runs = [run for label_runs in variants.values() for run in label_runs]
  run_rows = [[str(value) for value in row] for row in runs_frame(runs).itertuples(index=False)]
  parts = [
      f"# Replay comparison\n\nBaseline: **{baseline}**. {len(runs)} runs, "
      f"{len(variants)} variants, worlds: {', '.join(sorted({r.world_hash for r in runs}))}.",
      "## Metrics (mean [95% CI])", metrics_markdown(metrics_frame(table, variants), variants),
      f"## Deltas vs {baseline} (variant - baseline [95% CI], relative [95% CI])",
      deltas_markdown(deltas_frame(table, list(variants), baseline), baseline),
      "## How the intervals were computed",
      interval_note(options),
      "Variant intervals:\n" + methods_markdown(methods_frame(table, "ci_method")),
      "Delta intervals:\n" + methods_markdown(methods_frame(table, "delta_method")),
      "## Plots\n" + "\n".join(f"![{name}](plots/{name})" for name in plot_names),
      "## Runs", markdown_table(["run dir", "label", "seed", "day", "world hash"], run_rows),
  ]
  unavailable = unavailable_markdown(runs)
  if unavailable:
    parts.insert(1, unavailable)
  return "\n\n".join(parts) + "\n"
