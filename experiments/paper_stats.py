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

from data import intervals

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


def gap_closures(frame: pd.DataFrame, variant: str, **where) -> np.ndarray:
  """(student - baseline student) / (teacher - baseline student) per pair; empty unless the
  teacher beats the baseline student (95% CI of the gap above 0): no ratio of a null gap."""
  rows, base = paired_with_baseline(frame, variant, **where)
  gap = metric_values(rows, "teacher_auc") - metric_values(base, "auc")
  mean, half, _ = stat(gap)
  if not mean - np.nan_to_num(half) > 0:
    return np.array([])
  return (metric_values(rows, "auc") - metric_values(base, "auc")) / gap


def pairs_for_power(deltas, power_z: float = 0.8416, alpha_z: float = 1.96) -> float:
  """Pairs a paired test at 5% needs for 80% power if the true Δ eAUC were the mean seen here,
  at the spread seen here: ((z_0.975 + z_0.8) * sd / |mean|)^2 (normal approximation)."""
  deltas = np.asarray(deltas, dtype=np.float64)
  deltas = deltas[~np.isnan(deltas)]
  if len(deltas) < 2 or np.mean(deltas) == 0:
    return math.nan
  return float(math.ceil(((alpha_z + power_z) * np.std(deltas, ddof=1) / abs(np.mean(deltas)))
                         ** 2))


def reference_auc(frame: pd.DataFrame, **where) -> np.ndarray:
  """The linear reference's AUC on the same eval rows: a `reference` variant's rows when the
  study has them, else the reference_auc its runs read from MODEL_DIR/reference/."""
  rows = rows_where(frame, variant="reference", **where)
  if not rows.empty:
    return metric_values(rows, "auc")
  return metric_values(rows_where(frame, variant="baseline", **where), "reference_auc")


# ----------------------------------------------------------------------------- rendering


def format_table(table: pd.DataFrame) -> pd.DataFrame:
  """Display strings: "X" and "X ±" columns as "mean ± half", Δ columns signed, n as integers,
  missing figures as n/a. The one place numbers become text."""
  shown = {}
  for column in table.columns:
    if column.endswith(" ±"):
      continue
    values = table[column]
    if not pd.api.types.is_float_dtype(values):
      shown[column] = values.map(lambda v: "n/a" if _missing(v) else str(v))
      continue
    halves = table.get(f"{column} ±")
    if halves is None and not column.startswith("Δ"):  # a setting (λ, a world knob)
      shown[column] = values.map(lambda v: "n/a" if _missing(v) else f"{v:g}")
      continue
    signed = column.startswith("Δ")
    shown[column] = [_number(v, None if halves is None else halves.iloc[k], signed)
                     for k, v in enumerate(values)]
  return pd.DataFrame(shown, index=table.index)


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
