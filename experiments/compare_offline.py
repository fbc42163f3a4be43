"""Compare's intervals for the offline figures (AUC, GAUC, eAUC of each model on the replayed
day's logs): percentile bootstraps over users of the impressions a replay scored
(experiments.offline_table), for one run and for a run pair.

A pair of runs that scored the same impressions is resampled together (the same users in
both), so its delta is paired; other pairs are resampled apart. Bootstraps are cached by the
content of the scores: a model two funnels share (the same fine CTR export) is bootstrapped
once, and its delta is exactly 0. `prime` computes each pair's replicates once and keeps each
side's interval from them.
"""

import hashlib
import math
from typing import Dict, Optional, Tuple

import numpy as np
import pandas as pd

from data.stats import intervals
from experiments import offline_table
from experiments.offline_table import OfflineMetric

Interval = Tuple[float, float, float]


def _digest(metric: OfflineMetric, frame: pd.DataFrame) -> str:
  """What a run's figure depends on: its rows' ids, labels, users and scores."""
  rows = metric.rows(frame)
  digest = hashlib.sha256(metric.name.encode())
  for column in ("request_id", "item_id", "user_id", metric.label, metric.model,
                 offline_table.TRUE_P[metric.label]):
    if column in rows:
      digest.update(np.ascontiguousarray(rows[column].to_numpy()).tobytes())
  return digest.hexdigest()


class OfflineIntervals:
  """Bootstrap intervals of offline figures, cached (see the module docstring)."""

  def __init__(self, n_boot: int, seed: int):
    self.n_boot, self.seed = n_boot, seed
    self._single: Dict[str, Interval] = {}
    self._pair: Dict[Tuple[str, str], intervals.DeltaCI] = {}

  def interval(self, metric: OfflineMetric, frame: pd.DataFrame) -> Interval:
    """(value, lo, hi) of one run's figure, bootstrapped over its users."""
    key = _digest(metric, frame)
    if key not in self._single:
      if metric.kind == "gauc":
        numerator, denominator = offline_table.gauc_parts(metric, frame)
        self._single[key] = intervals.bootstrap_ci(numerator, n_boot=self.n_boot,
                                                   seed=self.seed, denominators=denominator)
      else:
        point, reps = offline_table.replicates(metric, [frame], self.n_boot, self.seed)
        self._single[key] = intervals.auc_interval(point[0], reps[:, 0])
    return self._single[key]

  def delta(self, metric: OfflineMetric, base: pd.DataFrame,
            variant: pd.DataFrame) -> Tuple[intervals.DeltaCI, str]:
    """(variant minus baseline with its 95% CI, how it was resampled)."""
    keys = (_digest(metric, base), _digest(metric, variant))
    paired = offline_table.aligned(base, variant)
    method = ("bootstrap over users, paired on the same logged impressions" if paired
              else "unpaired bootstrap over users (different impressions)")
    if keys not in self._pair:
      self._pair[keys] = self._compute_delta(metric, base, variant, keys, paired)
    return self._pair[keys], method

  def _compute_delta(self, metric, base, variant, keys, paired) -> intervals.DeltaCI:
    if keys[0] == keys[1]:  # the same model on the same rows
      value = self.interval(metric, base)[0]
      return intervals.DeltaCI(value, value, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                               len(metric.rows(base)))
    if metric.kind == "gauc":
      (base_num, base_den), (variant_num, variant_den) = (
          offline_table.gauc_parts(metric, base), offline_table.gauc_parts(metric, variant))
      if paired and len(base_num) == len(variant_num):
        return intervals.paired_bootstrap_delta(
            base_num, variant_num, n_boot=self.n_boot, seed=self.seed,
            baseline_denominators=base_den, treatment_denominators=variant_den)
      return intervals.independent_bootstrap_delta(
          base_num, variant_num, n_boot=self.n_boot, seed=self.seed,
          baseline_denominators=base_den, treatment_denominators=variant_den)
    if paired:
      points, reps = offline_table.replicates(metric, [base, variant], self.n_boot, self.seed)
      for key, column in zip(keys, range(2)):  # each side's interval from the same draws
        self._single.setdefault(key, intervals.auc_interval(points[column], reps[:, column]))
      return intervals.replicate_delta(points[0], points[1], reps[:, 0], reps[:, 1],
                                       len(metric.rows(base)))
    sides = [offline_table.replicates(metric, [frame], self.n_boot, self.seed + offset)
             for offset, frame in enumerate((base, variant))]
    return intervals.replicate_delta(sides[0][0][0], sides[1][0][0], sides[0][1][:, 0],
                                     sides[1][1][:, 0],
                                     len(metric.rows(base)) + len(metric.rows(variant)))


def metric_of(name: str, frame: Optional[pd.DataFrame]) -> Optional[OfflineMetric]:
  """The declared offline figure `name` if the run's scores can give it, else None."""
  metric = offline_table.METRICS_BY_NAME.get(name)
  if metric is None or not metric.usable(frame):
    return None
  return None if math.isnan(metric.value(frame)) else metric
