"""Compare's report: tables as DataFrames of numbers first, Markdown rendered from them last.

The report leads with the answer: a headline table per compared variant (online GMV, clicks
and conversions per 1,000 requests; each ranking model's AUC and eAUC; the oracle's best
items surviving each stage, in funnel order), each row with its 95% interval and a plain
verdict; then the other quality figures, then diagnostics (latency, throughput, counts) with
plain differences only, then every figure per variant, the plots and how the intervals were
computed. `headline_frame`, `metrics_frame`, `deltas_frame`, `methods_frame` and
`runs_frame` reshape compare_stats' long table into those tables; tests read their numbers.
`report_markdown` renders them, and `_number` is the one place a number becomes text.
"""

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from experiments.compare_runs import ReplayRun
from experiments.compare_stats import BootstrapOptions

GAIN, LOSS, NO_DIFFERENCE, NO_INTERVAL = ("significant gain", "significant loss",
                                          "no difference", "no interval")


@dataclasses.dataclass(frozen=True)
class Figure:
  """How the report shows one metric: its title, whether a relative delta means anything
  (not for a correlation, an AUC, a count or a timing) and whether it is a count."""
  name: str
  title: str
  relative: bool = True
  integer: bool = False


HEADLINE = (
    Figure("online/exp_gmv_per_1k", "expected GMV per 1,000 requests"),
    Figure("online/exp_clicks_per_1k", "expected clicks per 1,000 requests"),
    Figure("online/exp_conversions_per_1k", "expected conversions per 1,000 requests"),
    Figure("offline/coarse_auc", "coarse AUC", relative=False),
    Figure("offline/coarse_eauc", "coarse eAUC", relative=False),
    Figure("offline/fine_ctr_auc", "fine CTR AUC", relative=False),
    Figure("offline/fine_ctr_eauc", "fine CTR eAUC", relative=False),
    Figure("offline/fine_cvr_auc", "fine CVR AUC", relative=False),
    Figure("offline/fine_cvr_eauc", "fine CVR eAUC", relative=False),
    Figure("survival/retrieval", "oracle-best items surviving retrieval"),
    Figure("survival/coarse", "oracle-best items surviving coarse rank"),
    Figure("survival/fine", "oracle-best items surviving fine rank (on the page)"),
)
# The other quality figures (docs/metrics.md), in the funnel's order.
QUALITY = (
    Figure("online/share_of_oracle_gmv", "share of the oracle page's GMV"),
    Figure("online/share_of_oracle_clicks", "share of the oracle page's clicks"),
    Figure("online/share_of_oracle_conversions", "share of the oracle page's conversions"),
    Figure("online/oracle_gmv_per_1k", "oracle page's GMV per 1,000 requests"),
    Figure("online/oracle_clicks_per_1k", "oracle page's clicks per 1,000 requests"),
    Figure("online/oracle_conversions_per_1k", "oracle page's conversions per 1,000 requests"),
    Figure("cascade/coarse_fine_ctr_recall", "coarse->fine recall, fine CTR score"),
    Figure("cascade/kendall_tau_ctr", "Kendall tau, coarse vs fine CTR score", relative=False),
    Figure("cascade/coarse_fine_recall", "coarse->fine recall, fine ranking score"),
    Figure("cascade/kendall_tau", "Kendall tau, coarse vs fine ranking score",
           relative=False),
    Figure("offline/coarse_gauc", "coarse GAUC", relative=False),
    Figure("offline/fine_ctr_gauc", "fine CTR GAUC", relative=False),
    Figure("offline/fine_cvr_gauc", "fine CVR GAUC", relative=False),
)
DIAGNOSTICS = (
    Figure("n_requests", "requests replayed", relative=False, integer=True),
    Figure("cascade/n_requests", "requests in the cascade sample", relative=False,
           integer=True),
    Figure("throughput/requests_per_second", "requests/s, whole replay", relative=False),
    Figure("throughput/funnel_requests_per_second", "requests/s, funnel only",
           relative=False),
    Figure("latency/retrieval_ms", "retrieval, ms per request", relative=False),
    Figure("latency/coarse_ms", "coarse, ms per request", relative=False),
    Figure("latency/fine_ms", "fine, ms per request", relative=False),
    Figure("latency/oracle_ms", "oracle, ms per request", relative=False),
    Figure("latency/cascade_ms", "cascade figures, ms per request", relative=False),
)
FIGURES = {figure.name: figure for figure in HEADLINE + QUALITY + DIAGNOSTICS}

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


def report_order(metrics: Sequence[str]) -> List[str]:
  """The headline figures, the other quality figures and the diagnostics in the report's
  order, then any other metric in the order given."""
  known = [figure.name for figure in HEADLINE + QUALITY + DIAGNOSTICS if figure.name in metrics]
  return known + [name for name in metrics if name not in FIGURES]


def metrics_frame(table: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame:
  """Every metric per variant: mean, 95% CI bounds and seeds (0 seeds: NaN everywhere)."""
  frame = _pivot(table, variants, METRIC_STATS)
  return frame.reindex(report_order(list(frame.index)))


def deltas_frame(table: pd.DataFrame, variants: Sequence[str], baseline: str) -> pd.DataFrame:
  """Every metric's delta vs the baseline per other variant: absolute and relative with CIs
  (relative ones only where they mean something: `Figure.relative`)."""
  frame = _pivot(table, [label for label in variants if label != baseline], DELTA_STATS)
  for name in frame.index:
    if name in FIGURES and not FIGURES[name].relative:
      for stat in ("rel_delta", "rel_lo", "rel_hi"):
        frame.loc[name, (slice(None), stat)] = math.nan
  return frame.reindex(report_order(list(frame.index)))


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


def verdict(low: float, high: float) -> str:
  """Significant gain (the 95% interval of the difference above 0), significant loss (below),
  no difference (it holds 0), or no interval."""
  if _missing(low) or _missing(high):
    return NO_INTERVAL
  return GAIN if low > 0 else LOSS if high < 0 else NO_DIFFERENCE


def headline_frame(table: pd.DataFrame, baseline: str, variant: str,
                   figures: Sequence[Figure] = HEADLINE) -> pd.DataFrame:
  """One row per figure the runs hold: both sides' mean and 95% CI, the delta (and the
  relative one where it means something) with its CI, the verdict and any null's reason."""
  by_key = table.set_index(["variant", "metric"])
  rows = []
  for figure in figures:
    if (baseline, figure.name) not in by_key.index and (variant, figure.name) not in by_key.index:
      continue
    base = _stats(by_key, baseline, figure.name)
    other = _stats(by_key, variant, figure.name)
    row: Dict[str, Any] = {"metric": figure.name, "figure": figure.title,
           "base": base.get("mean"), "base_lo": base.get("ci_lo"), "base_hi": base.get("ci_hi"),
           "variant": other.get("mean"), "variant_lo": other.get("ci_lo"),
           "variant_hi": other.get("ci_hi")}
    row.update({k: other.get(k, math.nan) for k in DELTA_STATS})
    if not figure.relative:
      row.update(rel_delta=math.nan, rel_lo=math.nan, rel_hi=math.nan)
    reasons = [r for r in (base.get("null_reason"), other.get("null_reason"))
               if isinstance(r, str)]
    row["null_reason"] = reasons[0] if reasons else None
    row["verdict"] = "n/a" if reasons else verdict(row["delta_lo"], row["delta_hi"])
    rows.append(row)
  return pd.DataFrame(rows)


def _stats(by_key: pd.DataFrame, label: str, metric: str) -> dict:
  if (label, metric) not in by_key.index:
    return {}
  return by_key.loc[(label, metric)].to_dict()


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _missing(value) -> bool:
  return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: float, signed: bool = False, integer: bool = False) -> str:
  """The one place a number becomes text: counts as integers with thousands separators,
  large figures without exponents, small ones to 4 significant digits."""
  if _missing(value):
    return "-"
  sign = "+" if signed else ""
  if integer or (abs(value) >= 1000 and float(value).is_integer()):
    return f"{value:{sign},.0f}"
  if abs(value) >= 1000:
    return f"{value:{sign},.1f}"
  return f"{value:{sign}.4g}"


def _interval(low: float, high: float, signed: bool = False) -> str:
  if _missing(low) or _missing(high):
    return ""
  return f" [{_number(low, signed)}, {_number(high, signed)}]"


def _percent(value: float) -> str:
  return f"{value:+.2%}"


def _percent_interval(low: float, high: float) -> str:
  if _missing(low) or _missing(high):
    return ""
  return f" [{_percent(low)}, {_percent(high)}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


class Notes:
  """Footnotes for null figures: each distinct reason numbered once, cells read "n/a (k)"."""

  def __init__(self):
    self.reasons: List[str] = []

  def mark(self, reason: str) -> str:
    if reason not in self.reasons:
      self.reasons.append(reason)
    return f"n/a ({self.reasons.index(reason) + 1})"

  def markdown(self) -> str:
    return "\n".join(f"({k}) {reason}" for k, reason in enumerate(self.reasons, start=1))


def _value_cell(mean, low, high, figure: Optional[Figure], reason, notes: Notes) -> str:
  if isinstance(reason, str):
    return notes.mark(reason)
  integer = figure is not None and figure.integer
  return _number(mean, integer=integer) + ("" if integer else _interval(low, high))


def _headline_markdown(frame: pd.DataFrame, baseline: str, variant: str, notes: Notes) -> str:
  header = ["figure", baseline, variant, f"{variant} - {baseline} [95% CI]", "relative [95% CI]",
            "verdict"]
  rows = []
  for row in frame.itertuples(index=False):
    figure = FIGURES.get(row.metric)
    reason = row.null_reason
    delta = ("" if isinstance(reason, str) or _missing(row.delta) else
             _number(row.delta, True) + _interval(row.delta_lo, row.delta_hi, True))
    relative = ("" if isinstance(reason, str) or _missing(row.rel_delta) else
                _percent(row.rel_delta) + _percent_interval(row.rel_lo, row.rel_hi))
    rows.append([row.figure, _value_cell(row.base, row.base_lo, row.base_hi, figure, reason,
                                         notes),
                 _value_cell(row.variant, row.variant_lo, row.variant_hi, figure, reason, notes),
                 delta, relative, f"**{row.verdict}**" if row.verdict in (GAIN, LOSS)
                 else row.verdict])
  return markdown_table(header, rows)


def _diagnostics_markdown(table: pd.DataFrame, labels: Sequence[str], baseline: str,
                          notes: Notes) -> str:
  """Latency, throughput and counts per variant, with plain differences from the baseline."""
  by_key = table.set_index(["variant", "metric"])
  others = [label for label in labels if label != baseline]
  header = ["figure"] + list(labels) + [f"{label} - {baseline}" for label in others]
  rows = []
  for figure in DIAGNOSTICS:
    stats = {label: _stats(by_key, label, figure.name) for label in labels}
    if not any(stats.values()):
      continue
    cells = [_value_cell(s.get("mean", math.nan), math.nan, math.nan, figure,
                         s.get("null_reason"), notes) for s in stats.values()]
    cells += [_number(stats[label].get("mean", math.nan) - stats[baseline].get("mean", math.nan),
                      True, figure.integer) for label in others]
    rows.append([figure.title] + cells)
  return markdown_table(header, rows)


def _metric_cell(stats: pd.Series) -> str:
  if math.isnan(stats["n_seeds"]):
    return ""
  integer = FIGURES.get(str(stats.name), Figure("", "")).integer
  return _number(stats["mean"], integer=integer) + ("" if integer else
                                                     _interval(stats["ci_lo"], stats["ci_hi"]))


def _delta_cell(stats: pd.Series) -> str:
  if math.isnan(stats["delta"]):
    return ""
  interval = _percent_interval(stats["rel_lo"], stats["rel_hi"])
  relative = ("" if math.isnan(stats["rel_delta"]) else
              f" ({_percent(stats['rel_delta'])}{interval})")
  return (_number(stats["delta"], True) + _interval(stats["delta_lo"], stats["delta_hi"], True)
          + relative)


def _render(frame: pd.DataFrame, header: List[str], cell) -> str:
  variants = list(dict.fromkeys(frame.columns.get_level_values("variant")))
  rows = []
  for metric in frame.index:
    cells = []
    for label in variants:
      stats = frame.loc[metric, label].copy()
      stats.name = metric
      cells.append(cell(stats))
    rows.append([metric] + cells)
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
      "per_request.parquet recomputes, and over users of the day's logged impressions for the "
      "offline AUC, GAUC and eAUC (offline_scores.parquet); other metrics have no CI. Deltas: "
      "paired by seed (t) when >= 2 seeds are shared; Welch's t when both sides have >= 2 "
      "seeds but share fewer; otherwise a bootstrap of one run pair's outcomes (the same seed "
      "if possible), paired by request_id (or logged impression) when both runs replayed the "
      "same requests. Relative deltas at the seed level divide the absolute CI by the "
      "baseline mean. Verdict: a significant gain when the 95% interval of the difference "
      "lies above 0, a significant loss when below, no difference when it holds 0.")


def _lead(table: pd.DataFrame, baseline: str, variant: str, seeds: str) -> str:
  """One sentence with the answer: the online figures' deltas and verdicts."""
  frame = headline_frame(table, baseline, variant, HEADLINE[:3])
  parts = []
  for row in frame.itertuples(index=False):
    if isinstance(row.null_reason, str) or _missing(row.delta):
      continue
    change = (_percent(row.rel_delta) + _percent_interval(row.rel_lo, row.rel_hi)
              if not _missing(row.rel_delta) else _number(row.delta, True))
    parts.append(f"{row.figure.removeprefix('expected ')} {change} ({row.verdict})")
  if not parts:
    return (f"**{variant} against {baseline}** ({seeds}): no online figure (this world has no "
            "oracle); the model figures below.")
  return f"**{variant} against {baseline}** ({seeds}): " + "; ".join(parts) + "."


def report_markdown(table: pd.DataFrame, variants: Dict[str, List[ReplayRun]], baseline: str,
                    options: BootstrapOptions, plot_names: Sequence[str]) -> str:
  """The whole report.md, rendered from the frames above: the answer first."""
  runs = [run for label_runs in variants.values() for run in label_runs]
  labels = list(variants)
  others = [label for label in labels if label != baseline]
  notes = Notes()
  run_rows = [[str(value) for value in row] for row in runs_frame(runs).itertuples(index=False)]

  def seeds(label: str) -> str:
    n = len(variants[label])
    return f"{n} seed{'s' * (n > 1)}"

  parts = [f"# Replay comparison: {', '.join(others) or baseline} against {baseline}"]
  parts += [_lead(table, baseline, label, f"{seeds(label)} against {seeds(baseline)}")
            for label in others]
  for label in others:
    parts += [f"## Headline: {label} against {baseline}",
              _headline_markdown(headline_frame(table, baseline, label), baseline, label, notes)]
  for label in others:
    quality = headline_frame(table, baseline, label, QUALITY)
    if not quality.empty:
      parts += [f"## Other quality figures: {label} against {baseline}",
                _headline_markdown(quality, baseline, label, notes)]
  parts += ["Verdicts and intervals: see \"How the intervals were computed\" below. "
            "Figures are defined in docs/metrics.md."]
  parts += ["## Diagnostics (latency, throughput, counts)",
            _diagnostics_markdown(table, labels, baseline, notes)]
  if notes.reasons:
    parts += ["## Why some figures are n/a", notes.markdown().replace("\n", "  \n")]
  parts += [
      "## Plots\n" + "\n".join(f"![{name}](plots/{name})" for name in plot_names),
      "## Every figure (mean [95% CI])",
      metrics_markdown(metrics_frame(table, list(variants)), variants),
      f"## Every delta against {baseline} (variant - baseline [95% CI], relative [95% CI])",
      deltas_markdown(deltas_frame(table, labels, baseline), baseline),
      "## How the intervals were computed",
      interval_note(options),
      "Variant intervals:\n" + methods_markdown(methods_frame(table, "ci_method")),
      "Delta intervals:\n" + methods_markdown(methods_frame(table, "delta_method")),
      "## Runs", markdown_table(["run dir", "label", "seed", "day", "world hash"], run_rows),
      f"Worlds: {', '.join(sorted({r.world_hash for r in runs}))}.",
  ]
  return "\n\n".join(parts) + "\n"
