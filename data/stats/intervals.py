"""Confidence intervals: t intervals over paired seeds and bootstraps over users or requests.

Every "A beats B" the project prints comes from here: a mean ± 95% t-interval over seeds (or a
paired per-seed delta), or a percentile bootstrap over clusters (users) for one trained model.
Pure numpy; the t quantile and the cluster bootstrap are checked against scipy in the tests.
Intervals are 95% two-sided unless an `alpha` says otherwise.
"""

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple, cast

import numpy as np
import numpy.typing as npt

# Upper bound on the elements a vectorised block may allocate (bootstrap index matrices):
# keeps memory to tens of MB on shared machines.
_MAX_BLOCK_ELEMENTS = 1 << 22

# ---------------------------------------------------------------------------------------------
# Rigor: confidence intervals
# ---------------------------------------------------------------------------------------------

# Two-sided 95% critical values of Student's t (0.975 quantile), df = 1..30.
_T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
          2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
          2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z_975 = 1.959963985


def t_critical_95(df: float) -> float:
  """0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95%).

  Exact table for df <= 30 (fractional df round down, which is conservative); above 30 the
  Cornish-Fisher expansion around the normal quantile, accurate to ~1e-4.
  """
  if df < 1:
    return float("nan")
  if df <= 30:
    return _T_975[int(math.floor(df)) - 1]
  z = _Z_975
  return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
          + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def mean_ci_over_seeds(values: npt.ArrayLike) -> Tuple[float, float]:
  """(mean, half-width of the t-based 95% CI) of one figure measured over seeds.

  NaNs are dropped. With fewer than two values the half-width is nan: one seed says nothing
  about seed-to-seed variation.
  """
  values = np.asarray(values, dtype=np.float64).reshape(-1)
  values = cast(np.ndarray, values[~np.isnan(values)])
  if values.size == 0:
    return float("nan"), float("nan")
  mean = float(values.mean())
  if values.size < 2:
    return mean, float("nan")
  standard_error = values.std(ddof=1) / math.sqrt(values.size)
  return mean, float(t_critical_95(values.size - 1) * standard_error)


def welch_delta_ci(baseline: npt.ArrayLike, treatment: npt.ArrayLike) -> Tuple[float, float]:
  """(mean(treatment) - mean(baseline), 95% half-width) for unpaired seeds (Welch's t)."""
  baseline = np.asarray(baseline, dtype=np.float64)
  treatment = np.asarray(treatment, dtype=np.float64)
  baseline, treatment = (cast(np.ndarray, baseline[~np.isnan(baseline)]),
                         cast(np.ndarray, treatment[~np.isnan(treatment)]))
  delta = float(treatment.mean() - baseline.mean())
  if baseline.size < 2 or treatment.size < 2:
    return delta, float("nan")
  var_b, var_t = baseline.var(ddof=1) / baseline.size, treatment.var(ddof=1) / treatment.size
  if var_b + var_t == 0:
    return delta, 0.0
  df = (var_b + var_t) ** 2 / (var_b ** 2 / (baseline.size - 1)
                               + var_t ** 2 / (treatment.size - 1))
  return delta, float(t_critical_95(df) * math.sqrt(var_b + var_t))


def _cluster_sums(columns: np.ndarray, groups: Optional[npt.ArrayLike]) -> np.ndarray:
  """Per-cluster column sums [n_clusters, p]; without groups every row is its own cluster."""
  if groups is None:
    return columns
  _, cluster = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
  cluster = cluster.reshape(-1)
  return np.stack([np.bincount(cluster, weights=column) for column in columns.T], axis=1)


def _bootstrap_sums(columns: np.ndarray, groups: Optional[npt.ArrayLike], n_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
  """Column sums over `n_boot` resamples of clusters drawn with replacement: [n_boot, p]."""
  sums = _cluster_sums(columns, groups)
  n_clusters = sums.shape[0]
  block = max(1, _MAX_BLOCK_ELEMENTS // max(1, n_clusters * sums.shape[1]))
  replicates = []
  for start in range(0, n_boot, block):
    picks = rng.integers(0, n_clusters, size=(min(block, n_boot - start), n_clusters))
    replicates.append(sums[picks].sum(axis=1))
  return np.concatenate(replicates, axis=0)


def _outcome_columns(values: npt.ArrayLike,
                     denominators: Optional[npt.ArrayLike]) -> Tuple[np.ndarray, np.ndarray]:
  """(columns [n, 2] = values and denominators as floats, rows without a nan [n])."""
  values = np.asarray(values, dtype=np.float64).reshape(-1)
  denominators = (np.ones_like(values) if denominators is None
                  else np.asarray(denominators, dtype=np.float64).reshape(-1))
  columns = np.stack([values, denominators], axis=1)
  return columns, ~np.isnan(columns).any(axis=1)


def _subset_groups(groups: Optional[npt.ArrayLike], keep: np.ndarray) -> Optional[np.ndarray]:
  return None if groups is None else np.asarray(groups).reshape(-1)[keep]


def _percentile_interval(replicates: np.ndarray, alpha: float) -> Tuple[float, float]:
  replicates = replicates[np.isfinite(replicates)]
  if replicates.size == 0:
    return float("nan"), float("nan")
  low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
  return float(low), float(high)


def bootstrap_ci(values: npt.ArrayLike, stat: Callable[[np.ndarray], Any] = np.mean,
                 n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 groups: Optional[npt.ArrayLike] = None,
                 denominators: Optional[npt.ArrayLike] = None) -> Tuple[float, float, float]:
  """(estimate, lo, hi): percentile bootstrap CI of `stat` over `values`.

  groups: resample clusters (e.g. user ids) instead of single values, for outcomes that are
    correlated within a user. Needs the default stat (mean).
  denominators: report the ratio of sums sum(values) / sum(denominators) instead of the mean
    (e.g. expected clicks / oracle clicks). Needs the default stat.
  Rows with a nan are dropped. Deterministic for a given seed.
  """
  rng = np.random.default_rng(seed)
  if stat is not np.mean:
    if groups is not None or denominators is not None:
      raise ValueError("groups and denominators need stat=np.mean (a ratio of sums)")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    values = cast(np.ndarray, values[~np.isnan(values)])
    replicates = np.array([stat(values[rng.integers(0, values.size, values.size)])
                           for _ in range(n_boot)])
    return (float(stat(values)),) + _percentile_interval(replicates, alpha)
  columns, keep = _outcome_columns(values, denominators)
  columns, groups = columns[keep], _subset_groups(groups, keep)
  if columns.shape[0] == 0:
    return float("nan"), float("nan"), float("nan")
  estimate = columns[:, 0].sum() / columns[:, 1].sum()
  sums = _bootstrap_sums(columns, groups, n_boot, rng)
  with np.errstate(divide="ignore", invalid="ignore"):
    replicates = sums[:, 0] / sums[:, 1]
  return (float(estimate),) + _percentile_interval(replicates, alpha)


class DeltaCI(NamedTuple):
  """Treatment minus baseline, absolute and relative, each with a 95% (1 - alpha) CI."""
  baseline: float
  treatment: float
  delta: float
  delta_lo: float
  delta_hi: float
  rel_delta: float  # delta / baseline
  rel_lo: float
  rel_hi: float
  n: int  # rows (requests) that entered the estimate


def _delta_from_replicates(baseline: float, treatment: float, baseline_reps: np.ndarray,
                           treatment_reps: np.ndarray, alpha: float, n: int) -> DeltaCI:
  """Point delta plus percentile intervals of the replicate deltas (absolute and relative)."""
  with np.errstate(divide="ignore", invalid="ignore"):
    delta_reps = treatment_reps - baseline_reps
    rel_reps = delta_reps / baseline_reps
    delta = treatment - baseline
    rel_delta = delta / baseline if baseline != 0 else float("nan")
  return DeltaCI(float(baseline), float(treatment), float(delta),
                 *_percentile_interval(delta_reps, alpha),
                 float(rel_delta), *_percentile_interval(rel_reps, alpha), int(n))


def paired_bootstrap_delta(baseline: npt.ArrayLike, treatment: npt.ArrayLike,
                           groups: Optional[npt.ArrayLike] = None,
                           n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                           baseline_denominators: Optional[npt.ArrayLike] = None,
                           treatment_denominators: Optional[npt.ArrayLike] = None) -> DeltaCI:
  """Delta of means (treatment - baseline) for paired per-request outcomes, with CIs.

  Row i of both arrays is the same request, so each bootstrap replicate resamples requests
  (or whole clusters given `groups`, e.g. user ids) once and scores both sides on them: the
  request-to-request noise cancels and the CI is far tighter than an unpaired one.
  With denominators, each side is a ratio of sums (e.g. share of the oracle's clicks).
  Rows with a nan on either side are dropped.
  """
  base_columns, base_keep = _outcome_columns(baseline, baseline_denominators)
  treat_columns, treat_keep = _outcome_columns(treatment, treatment_denominators)
  if base_columns.shape != treat_columns.shape:
    raise ValueError(f"paired outcomes need equal lengths, got {len(base_columns)} "
                     f"and {len(treat_columns)}")
  keep = base_keep & treat_keep
  columns = np.concatenate([base_columns, treat_columns], axis=1)[keep]
  kept_groups = _subset_groups(groups, keep)
  if columns.shape[0] == 0:
    return DeltaCI._make([float("nan")] * 8 + [0])
  totals = columns.sum(axis=0)
  sums = _bootstrap_sums(columns, kept_groups, n_boot, np.random.default_rng(seed))
  with np.errstate(divide="ignore", invalid="ignore"):
    return _delta_from_replicates(totals[0] / totals[1], totals[2] / totals[3],
                                  sums[:, 0] / sums[:, 1], sums[:, 2] / sums[:, 3],
                                  alpha, columns.shape[0])


def independent_bootstrap_delta(baseline: npt.ArrayLike, treatment: npt.ArrayLike,
                                baseline_groups: Optional[npt.ArrayLike] = None,
                                treatment_groups: Optional[npt.ArrayLike] = None,
                                n_boot: int = 1000,
                                seed: int = 0, alpha: float = 0.05,
                                baseline_denominators: Optional[npt.ArrayLike] = None,
                                treatment_denominators: Optional[npt.ArrayLike] = None) -> DeltaCI:
  """Delta of means (treatment - baseline) for unpaired samples (e.g. different days).

  Each side is resampled on its own (by cluster when groups are given). Use
  `paired_bootstrap_delta` whenever both sides scored the same requests.
  """
  rng = np.random.default_rng(seed)
  estimates, replicates, n = [], [], 0
  for values, denominators, groups in ((baseline, baseline_denominators, baseline_groups),
                                       (treatment, treatment_denominators, treatment_groups)):
    columns, keep = _outcome_columns(values, denominators)
    columns, groups = columns[keep], _subset_groups(groups, keep)
    if columns.shape[0] == 0:
      return DeltaCI._make([float("nan")] * 8 + [0])
    sums = _bootstrap_sums(columns, groups, n_boot, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
      estimates.append(columns[:, 0].sum() / columns[:, 1].sum())
      replicates.append(sums[:, 0] / sums[:, 1])
    n += columns.shape[0]
  return _delta_from_replicates(estimates[0], estimates[1], replicates[0], replicates[1],
                                alpha, n)


# ---------------------------------------------------------------------------------------------
# AUC over resampled users
# ---------------------------------------------------------------------------------------------


class _SortedScores(NamedTuple):
  """One score column sorted once: its rows' clusters and label weights in score order, and
  its tie groups (runs of equal scores; None when every score differs)."""
  cluster: np.ndarray          # cluster of each sorted row
  positive: np.ndarray         # positive weight of each sorted row
  negative: np.ndarray         # negative weight of each sorted row
  ties: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]  # (group, start, stop) per row


def _sorted_scores(scores: np.ndarray, cluster: np.ndarray, positive: np.ndarray,
                   negative: np.ndarray) -> _SortedScores:
  order = np.argsort(scores, kind="stable")
  ordered = scores[order]
  starts = np.ones(len(ordered), bool)
  starts[1:] = ordered[1:] != ordered[:-1]
  ties = None
  if not starts.all():
    tie_start = np.flatnonzero(starts)
    ties = (np.cumsum(starts) - 1, tie_start, np.append(tie_start[1:], len(ordered)))
  return _SortedScores(cluster[order], positive[order], negative[order], ties)


def _weighted_aucs(counts: np.ndarray, column: _SortedScores) -> np.ndarray:
  """AUC of one score column with every row weighted by its cluster's count, one replicate
  per row of `counts` [b, n_clusters]: sum_i a_i (B below s_i + B tied with s_i / 2) / (A B),
  a = weight * positive, b = weight * negative (`data.stats.metrics.auc` and `eauc` when every
  weight is 1)."""
  weights = np.take(counts, column.cluster, axis=1).astype(np.float64)
  a, b = weights * column.positive, weights * column.negative
  below = np.zeros((len(weights), len(column.cluster) + 1))
  np.cumsum(b, axis=1, out=below[:, 1:])
  if column.ties is None:
    credit = below[:, :-1] + 0.5 * b
  else:
    group, start, stop = column.ties
    under, through = below[:, start], below[:, stop]
    credit = (under + 0.5 * (through - under))[:, group]
  with np.errstate(divide="ignore", invalid="ignore"):
    return cast(np.ndarray, np.einsum("ij,ij->i", a, credit) / (a.sum(axis=1) * b.sum(axis=1)))


def auc_replicates(score_columns: Sequence[npt.ArrayLike], positive: npt.ArrayLike,
                   negative: Optional[npt.ArrayLike] = None,
                   groups: Optional[npt.ArrayLike] = None, n_boot: int = 1000,
                   seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """(point AUCs [m], bootstrap AUCs [n_boot, m]) of m score columns over the same rows.

  Each row counts as a positive with weight `positive` and as a negative with weight
  `negative` (default 1 - positive): 0/1 labels give the AUC, the oracle's probabilities the
  eAUC (`data.stats.metrics`). A replicate resamples clusters (`groups`, e.g. users; default rows)
  with replacement, weighting every row by its cluster's count, and scores every column on
  that same resample: differences between columns are paired. One sort per column, then
  O(rows) per replicate and column.
  """
  positive = np.asarray(positive, np.float64).reshape(-1)
  negative = 1.0 - positive if negative is None else np.asarray(negative, np.float64).reshape(-1)
  cluster = (np.arange(len(positive)) if groups is None
             else np.unique(np.asarray(groups).reshape(-1), return_inverse=True)[1].reshape(-1))
  n_clusters = int(cluster.max()) + 1 if len(cluster) else 0
  columns = [_sorted_scores(np.asarray(s, np.float64).reshape(-1), cluster, positive, negative)
             for s in score_columns]
  ones = np.ones((1, n_clusters))
  point = np.array([_weighted_aucs(ones, column)[0] for column in columns])
  rng = np.random.default_rng(seed)
  replicates = np.empty((n_boot, len(columns)))
  block = max(1, (_MAX_BLOCK_ELEMENTS // 8) // max(1, len(positive)))
  for start in range(0, n_boot, block):
    size = min(block, n_boot - start)
    picks = rng.integers(0, max(n_clusters, 1), size=(size, n_clusters))
    counts = np.stack([np.bincount(row, minlength=n_clusters) for row in picks])
    for j, column in enumerate(columns):
      replicates[start:start + size, j] = _weighted_aucs(counts, column)
  return point, replicates


def auc_interval(point: float, replicates: np.ndarray,
                 alpha: float = 0.05) -> Tuple[float, float, float]:
  """(estimate, lo, hi) from `auc_replicates`' point and one column of its replicates."""
  return (float(point),) + _percentile_interval(np.asarray(replicates, np.float64), alpha)


def replicate_delta(baseline: float, treatment: float, baseline_reps: np.ndarray,
                    treatment_reps: np.ndarray, n: int, alpha: float = 0.05) -> DeltaCI:
  """A DeltaCI from two point figures and their bootstrap replicates (paired when the
  replicates come from the same resamples, as `auc_replicates`' columns do)."""
  return _delta_from_replicates(baseline, treatment, np.asarray(baseline_reps, np.float64),
                                np.asarray(treatment_reps, np.float64), alpha, n)
