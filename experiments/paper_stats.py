"""The numbers of the paper study's report: per-pair figures, paired deltas, intervals, and
the one rendering of a numeric table as Markdown.

A study's rows are trial runs (one per stage run: study, stage, variant, world_seed, seed, days,
knobs and the run's metrics). The unit of every interval is a pair (world seed, training seed);
a delta is the variant's figure minus the baseline student's on the same pair (same world, data
order and initialisation). Tables stay numeric DataFrames, "X" and "X ±" columns holding a mean
and its 95% t half-width; `format_table` makes them text, last.
"""

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from data.stats import intervals

PAIR = ("world_seed", "seed")  # the unit of every interval: one world seed, one training seed


@dataclasses.dataclass
class Section:
  """One report section: its table (numeric where it can be) and the Markdown lines after it."""
  table: pd.DataFrame
  notes: List[str] = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------- numbers


def stat(values) -> Tuple[float, float, int]:
  """(mean, 95% t half-width, n) of one figure over pairs; NaNs dropped."""
  values = np.asarray(values, dtype=np.float64).reshape(-1)
  n = int(np.sum(~np.isnan(values)))
  mean, half = intervals.mean_ci_over_seeds(values)
  return mean, half, n


def stat_cells(name: str, values) -> Dict[str, float]:
  """{name: mean, name ±: half-width} (the pair `format_table` renders as "mean ± half")."""
  mean, half, _ = stat(values)
  return {name: mean, f"{name} ±": half}


def with_pairs(frame: pd.DataFrame) -> pd.DataFrame:
  """The frame with a world_seed column (0 when a frame predates world seeds)."""
  if "world_seed" in frame:
    return frame
  return frame.assign(world_seed=0)


def rows_where(frame: pd.DataFrame, **where) -> pd.DataFrame:
  mask = np.ones(len(frame), bool)
  for column, value in where.items():
    mask &= (frame[column] == value).to_numpy() if column in frame else False
  return with_pairs(frame[mask]).sort_values(list(PAIR))


def metric_values(rows: pd.DataFrame, name: str) -> np.ndarray:
  """A metric over the rows, NaN where the runs did not report it."""
  if name not in rows:
    return np.full(len(rows), np.nan)
  return rows[name].to_numpy(dtype=np.float64)


def paired_with_baseline(frame: pd.DataFrame, variant: str, **where):
  """(the variant's rows, the baseline student's rows), both indexed by the pairs (world seed,
  seed) they share, in the same order."""
  return on_shared_pairs(rows_where(frame, variant=variant, **where),
                         rows_where(frame, variant="baseline", **where))


def on_shared_pairs(rows: pd.DataFrame, base: pd.DataFrame):
  """(rows, base), both indexed by the pairs (world seed, seed) they share, in one order."""
  rows, base = with_pairs(rows).set_index(list(PAIR)), with_pairs(base).set_index(list(PAIR))
  pairs = rows.index.intersection(base.index)
  return rows.loc[pairs], base.loc[pairs]


def paired_deltas(frame: pd.DataFrame, variant: str, metric: str, **where) -> np.ndarray:
  """The variant's `metric` minus the baseline student's, per pair (same world, data order and
  initialisation): the test of "variant beats baseline"."""
  rows, base = paired_with_baseline(frame, variant, **where)
  return metric_values(rows, metric) - metric_values(base, metric)


def pairs_for_power(deltas, power: float = 0.8, alpha: float = 0.05,
                    most: int = 10_000) -> float:
  """Pairs a paired t-test at `alpha` needs for `power` if the true Δ were the mean seen here,
  at the spread seen here: the smallest n whose noncentral-t power reaches it (nan when the
  deltas say nothing: fewer than two, or a zero mean; `most` + 1 when beyond `most`)."""
  deltas = np.asarray(deltas, dtype=np.float64)
  deltas = deltas[~np.isnan(deltas)]
  if len(deltas) < 2 or np.mean(deltas) == 0:
    return math.nan
  spread = float(np.std(deltas, ddof=1))
  if spread == 0:
    return 2.0  # no spread at all: any two pairs show it
  effect = abs(float(np.mean(deltas))) / spread
  for n in range(2, most + 1):
    critical = scipy_stats.t.ppf(1 - alpha / 2, n - 1)
    shift = effect * math.sqrt(n)
    achieved = (scipy_stats.nct.sf(critical, n - 1, shift)
                + scipy_stats.nct.cdf(-critical, n - 1, shift))
    if achieved >= power:
      return float(n)
  return float(most + 1)


def p_value(values) -> float:
  """Two-sided p of a one-sample t-test of mean 0 (nan with fewer than two values)."""
  values = np.asarray(values, dtype=np.float64)
  values = values[~np.isnan(values)]
  if len(values) < 2:
    return math.nan
  if np.std(values, ddof=1) == 0:
    return 0.0 if np.mean(values) != 0 else 1.0
  return float(scipy_stats.ttest_1samp(values, 0.0).pvalue)


def world_deltas(frame: pd.DataFrame, variant: str, metric: str, **where) -> np.ndarray:
  """The variant's paired Δ `metric` averaged within each world seed: the world as the unit
  (a random effect of the world: pairs of one world share its draw), one value per world."""
  rows, base = paired_with_baseline(frame, variant, **where)
  deltas = pd.Series(metric_values(rows, metric) - metric_values(base, metric),
                     index=rows.index)
  if deltas.empty:
    return np.array([])
  return deltas.groupby(level="world_seed").mean().to_numpy(dtype=np.float64)


def gap_closure(frame: pd.DataFrame, variant: str, metric: str = "auc", resamples: int = 2000,
                seed: int = 0, **where) -> Tuple[float, float, float]:
  """(ratio, low, high): gap closure as a ratio of means, mean(student - baseline) /
  mean(teacher - baseline) over the pairs, with a 95% percentile bootstrap that resamples
  world seeds (with their pairs). nan when the teacher's gap is not significant (95% t
  interval of its mean above 0): no ratio of a null gap."""
  rows, base = paired_with_baseline(frame, variant, **where)
  gain = metric_values(rows, metric) - metric_values(base, metric)
  gap = metric_values(rows, f"teacher_{metric}") - metric_values(base, metric)
  keep = ~(np.isnan(gain) | np.isnan(gap))
  mean, half, _ = stat(gap[keep])
  if not keep.any() or not mean - np.nan_to_num(half) > 0:
    return math.nan, math.nan, math.nan
  worlds = rows.index.get_level_values("world_seed").to_numpy()[keep]
  gain, gap = gain[keep], gap[keep]
  ratio = float(gain.mean() / gap.mean())
  distinct = np.unique(worlds)
  members = [np.flatnonzero(worlds == w) for w in distinct]
  rng = np.random.default_rng(seed)
  ratios = []
  for _ in range(resamples):
    picked = np.concatenate([members[i] for i in rng.integers(0, len(distinct), len(distinct))])
    denominator = gap[picked].mean()
    if denominator > 0:
      ratios.append(gain[picked].mean() / denominator)
  if len(distinct) < 2 or not ratios:
    return ratio, math.nan, math.nan
  low, high = np.percentile(ratios, [2.5, 97.5])
  return ratio, float(low), float(high)


def reference_auc(frame: pd.DataFrame, **where) -> np.ndarray:
  """The linear reference's AUC on the same eval rows: a `reference` variant's rows when the
  study has them, else the reference_auc its runs read from MODEL_DIR/reference/."""
  rows = rows_where(frame, variant="reference", **where)
  if not rows.empty:
    return metric_values(rows, "auc")
  return metric_values(rows_where(frame, variant="baseline", **where), "reference_auc")


# ----------------------------------------------------------------------------- rendering


def interval_cells(name: str, estimate: float, low: float, high: float) -> Dict[str, float]:
  """{name, name low, name high}: an estimate with an asymmetric interval (a bootstrap's),
  rendered "estimate [low, high]" by `format_table`."""
  return {name: estimate, f"{name} low": low, f"{name} high": high}


def format_table(table: pd.DataFrame) -> pd.DataFrame:
  """Display strings: "X" and "X ±" columns as "mean ± half", "X", "X low", "X high" as
  "X [low, high]", Δ columns signed, counts (COUNTS) as integers, "p (...)" columns as
  p-values, missing figures as n/a. The one place numbers become text."""
  shown = {}
  for column in table.columns:
    if column.endswith((" ±", " low", " high")) and column.rsplit(" ", 1)[0] in table:
      continue
    values = table[column]
    if column in COUNTS:
      shown[column] = values.map(lambda v: "n/a" if _missing(v) else f"{int(v)}")
      continue
    if column.startswith("p ("):
      shown[column] = values.map(lambda v: "n/a" if _missing(v) else _p(v))
      continue
    if not pd.api.types.is_float_dtype(values):
      shown[column] = values.map(lambda v: "n/a" if _missing(v) else str(v))
      continue
    if f"{column} low" in table:
      shown[column] = [_bracketed(v, table[f"{column} low"].iloc[k],
                                  table[f"{column} high"].iloc[k])
                       for k, v in enumerate(values)]
      continue
    halves = table.get(f"{column} ±")
    if halves is None and not column.startswith("Δ"):  # a setting (λ, a world knob)
      shown[column] = values.map(lambda v: "n/a" if _missing(v) else f"{v:g}")
      continue
    signed = column.startswith("Δ")
    shown[column] = [_number(v, None if halves is None else halves.iloc[k], signed)
                     for k, v in enumerate(values)]
  return pd.DataFrame(shown, index=table.index)


COUNTS = ("n", "Δ pairs", "pairs", "worlds", "pairs for 80% power")  # shown as integers


def _p(value: float) -> str:
  """A p-value to two significant figures (as small as 1e-4; below, '< 0.0001')."""
  return "< 0.0001" if value < 1e-4 else f"{value:.2g}"


def _bracketed(value: float, low: float, high: float) -> str:
  if _missing(value):
    return "n/a"
  if _missing(low) or _missing(high):
    return f"{value:.2f}"
  return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def _missing(value) -> bool:
  return value is None or (isinstance(value, float) and math.isnan(value))


def _number(mean: float, half: Optional[float], signed: bool) -> str:
  if mean is None or math.isnan(mean):
    return "n/a"
  text = f"{mean:+.4f}" if signed else f"{mean:.4f}"
  if half is None:
    return text
  return text if math.isnan(half) else f"{text} ± {half:.4f}"


def render_section(section: Optional[Section]) -> List[str]:
  """The section's Markdown lines: the table (header, rule, one line per row), then notes."""
  if section is None:
    return []
  table = format_table(section.table)
  lines = ["| " + " | ".join(str(c) for c in table.columns) + " |",
           "|" + "---|" * len(table.columns)]
  lines += ["| " + " | ".join(str(v) for v in row) + " |"
            for row in table.itertuples(index=False)]
  return lines + list(section.notes)
