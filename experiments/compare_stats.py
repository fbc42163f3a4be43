"""Compare's statistics: every metric per variant with a 95% CI, and deltas vs a baseline.

  * a variant with >= 2 seeds: mean over seeds with a Student-t 95% CI;
  * a variant with 1 seed: a percentile bootstrap over users (or requests) of the per-request
    outcomes, for the metrics experiments.request_table declares; none otherwise;
  * deltas: paired by seed with a t CI when >= 2 seeds are shared; Welch's t when both sides
    have >= 2 seeds but do not share them; otherwise a bootstrap over the per-request outcomes,
    paired by request_id when both runs replayed the same requests.

`build_tables` returns the long table (one row per variant and metric) as a DataFrame of
numbers; rendering is compare_report's job.
"""

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from data.stats import intervals
from experiments import compare_offline
from experiments import offline_table
from experiments.compare_runs import ReplayRun
from experiments.request_table import METRICS_BY_NAME
from experiments.request_table import REQUEST_METRICS
from experiments.request_table import RequestMetric

# Requests two runs must share (as a share of the smaller run) to be compared request by request.
MIN_PAIRED_OVERLAP = 0.5
TABLE_COLUMNS = ["variant", "metric", "mean", "ci_lo", "ci_hi", "n_seeds", "ci_method", "delta",
                 "delta_lo", "delta_hi", "rel_delta", "rel_lo", "rel_hi", "delta_method",
                 "null_reason"]


@dataclasses.dataclass(frozen=True)
class BootstrapOptions:
  n_boot: int = 1000
  seed: int = 0
  unit: str = "user"  # "user" or "request"




def _usable(definition: Optional[RequestMetric], frame: pd.DataFrame) -> bool:
  """Whether the frame holds the columns a per-request metric is computed from."""
  return definition is not None and all(column in frame for column in definition.columns)


def run_values(run: ReplayRun) -> Dict[str, float]:
  """A run's value of every metric: summary.json first; a declared per-request metric the
  summary lacks is computed from the per-request table."""
  values = dict(run.metrics)
  for metric in REQUEST_METRICS:
    if metric.name not in values and _usable(metric, run.per_request):
      values[metric.name] = metric.value(run.per_request)
  return values


def _bootstrap_groups(frame: pd.DataFrame, options: BootstrapOptions, column="user_id"):
  return frame[column].to_numpy() if options.unit == "user" and column in frame else None


def _unit_name(frame: pd.DataFrame, options: BootstrapOptions) -> str:
  return "users" if _bootstrap_groups(frame, options) is not None else "requests"


def summarize_metric(runs: Sequence[ReplayRun], values: Sequence[Dict[str, float]],
                     name: str, definition: Optional[RequestMetric],
                     options: BootstrapOptions,
                     offline_cache: Optional[compare_offline.OfflineIntervals] = None) -> dict:
  """mean, ci_lo, ci_hi, n_seeds and ci_method of one metric for one variant."""
  present = [(run, value[name]) for run, value in zip(runs, values) if name in value]
  seed_values = [value for _, value in present]
  row = {"mean": float("nan"), "ci_lo": float("nan"), "ci_hi": float("nan"),
         "n_seeds": len(present), "ci_method": "none"}
  if len(present) >= 2:
    mean, half_width = intervals.mean_ci_over_seeds(seed_values)
    row.update(mean=mean, ci_lo=mean - half_width, ci_hi=mean + half_width,
               ci_method=f"t over {len(present)} seeds")
  elif present:
    run, value = present[0]
    row["mean"] = value
    offline = compare_offline.metric_of(name, run.offline)
    if offline is not None and offline_cache is not None:
      _, low, high = offline_cache.interval(offline, run.offline)
      row.update(ci_lo=low, ci_hi=high, ci_method="bootstrap over users (1 seed)")
    elif definition is not None and _usable(definition, run.per_request):
      numerator, denominator = definition.arrays(run.per_request)
      _, low, high = intervals.bootstrap_ci(
          numerator, n_boot=options.n_boot, seed=options.seed, denominators=denominator,
          groups=_bootstrap_groups(run.per_request, options))
      row.update(ci_lo=low, ci_hi=high,
                 ci_method=f"bootstrap over {_unit_name(run.per_request, options)} (1 seed)")
  return row


def _delta_row(delta, low, high, baseline_mean, method, rel=None, rel_lo=None, rel_hi=None):
  """A delta table row; relative bounds default to the absolute ones over the baseline mean."""
  def relative(x):
    return x / baseline_mean if baseline_mean else float("nan")
  return {"delta": delta, "delta_lo": low, "delta_hi": high,
          "rel_delta": relative(delta) if rel is None else rel,
          "rel_lo": relative(low) if rel_lo is None else rel_lo,
          "rel_hi": relative(high) if rel_hi is None else rel_hi, "delta_method": method}


def _seed_level_delta(base_values: Dict[int, float], variant_values: Dict[int, float]):
  """Delta over seeds: paired by seed when >= 2 are shared, else Welch; None if too few."""
  shared = sorted(set(base_values) & set(variant_values))
  if len(shared) >= 2:
    deltas = [variant_values[seed] - base_values[seed] for seed in shared]
    delta, half_width = intervals.mean_ci_over_seeds(deltas)
    method = f"t over {len(shared)} seeds, paired by seed"
    baseline_mean = float(np.mean([base_values[seed] for seed in shared]))
  elif len(base_values) >= 2 and len(variant_values) >= 2:
    delta, half_width = intervals.welch_delta_ci(list(base_values.values()),
                                               list(variant_values.values()))
    method = "Welch t over seeds (seeds not shared)"
    baseline_mean = float(np.mean(list(base_values.values())))
  else:
    return None
  return _delta_row(delta, delta - half_width, delta + half_width, baseline_mean, method)


def _paired_requests(base: ReplayRun, variant: ReplayRun) -> Optional[pd.DataFrame]:
  """Both runs' per-request outcomes joined on request_id, or None if they replayed
  different requests (another day, or too little overlap)."""
  if base.day != variant.day or "request_id" not in base.per_request:
    return None
  if "request_id" not in variant.per_request:
    return None
  joined = base.per_request.merge(variant.per_request, on="request_id",
                                  suffixes=("@base", "@variant"))
  smaller = min(len(base.per_request), len(variant.per_request))
  return joined if smaller and len(joined) >= MIN_PAIRED_OVERLAP * smaller else None


def _request_level_delta(base: ReplayRun, variant: ReplayRun, definition: RequestMetric,
                         options: BootstrapOptions) -> dict:
  """Delta from a bootstrap over one run pair's per-request outcomes."""
  joined = _paired_requests(base, variant)
  if joined is not None:
    base_num, base_den = definition.arrays(joined, "@base")
    variant_num, variant_den = definition.arrays(joined, "@variant")
    groups = _bootstrap_groups(joined, options,
                               "user_id@base" if "user_id@base" in joined else "user_id")
    result = intervals.paired_bootstrap_delta(
        base_num, variant_num, groups=groups, n_boot=options.n_boot, seed=options.seed,
        baseline_denominators=base_den, treatment_denominators=variant_den)
    unit = "users" if groups is not None else "requests"
    method = f"bootstrap over {unit}, paired by request_id (seed {base.seed} vs {variant.seed})"
  else:
    base_num, base_den = definition.arrays(base.per_request)
    variant_num, variant_den = definition.arrays(variant.per_request)
    result = intervals.independent_bootstrap_delta(
        base_num, variant_num, _bootstrap_groups(base.per_request, options),
        _bootstrap_groups(variant.per_request, options), n_boot=options.n_boot,
        seed=options.seed, baseline_denominators=base_den,
        treatment_denominators=variant_den)
    method = (f"unpaired bootstrap over {_unit_name(base.per_request, options)} "
              f"(different requests; seed {base.seed} vs {variant.seed})")
  return _delta_row(result.delta, result.delta_lo, result.delta_hi, result.baseline, method,
                    result.rel_delta, result.rel_lo, result.rel_hi)


def _pick_run_pair(base_runs: Sequence[ReplayRun], variant_runs: Sequence[ReplayRun]):
  """The run pair for a request-level delta: the same seed if any is shared, else the first."""
  variant_by_seed = {run.seed: run for run in variant_runs}
  for run in base_runs:
    if run.seed in variant_by_seed:
      return run, variant_by_seed[run.seed]
  return base_runs[0], variant_runs[0]


def metric_delta(base_runs, base_values, variant_runs, variant_values, name,
                 definition, options, offline_cache=None) -> dict:
  """Delta of one metric, variant minus baseline, with the best CI the runs allow."""
  def by_seed(runs, values):
    return {run.seed: value[name] for run, value in zip(runs, values) if name in value}
  base_by_seed, variant_by_seed = by_seed(base_runs, base_values), by_seed(variant_runs,
                                                                           variant_values)
  if not base_by_seed or not variant_by_seed:
    return {}
  seed_level = _seed_level_delta(base_by_seed, variant_by_seed)
  if seed_level is not None:
    return seed_level
  base, variant = _pick_run_pair(base_runs, variant_runs)
  offline = compare_offline.metric_of(name, base.offline)
  if (offline is not None and offline_cache is not None
      and compare_offline.metric_of(name, variant.offline) is not None):
    result, method = offline_cache.delta(offline, base.offline, variant.offline)
    return _delta_row(result.delta, result.delta_lo, result.delta_hi, result.baseline,
                      f"{method} (seed {base.seed} vs {variant.seed})", result.rel_delta,
                      result.rel_lo, result.rel_hi)
  if _usable(definition, base.per_request) and _usable(definition, variant.per_request):
    return _request_level_delta(base, variant, definition, options)
  base_mean = float(np.mean(list(base_by_seed.values())))
  delta = float(np.mean(list(variant_by_seed.values()))) - base_mean
  return _delta_row(delta, float("nan"), float("nan"), base_mean,
                    "none (one seed and no per-request outcome)")


def _ordered_metric_names(values: Sequence[Mapping[str, object]]) -> List[str]:
  """Metric names in first-seen order: summary metrics as replay wrote them, derived after."""
  names: Dict[str, None] = {}
  for run_values_ in values:
    names.update(dict.fromkeys(run_values_))
  return list(names)


def _prime_offline(variants: Dict[str, List[ReplayRun]], baseline: str,
                   cache: compare_offline.OfflineIntervals) -> None:
  """Bootstraps each one-seed comparison's offline figures as a pair first, so that both
  sides' intervals come from the pair's resamples instead of a bootstrap of their own."""
  base_runs = variants[baseline]
  for label, runs in variants.items():
    if label == baseline or (len(base_runs) >= 2 and len(runs) >= 2):
      continue  # seeds give the intervals
    base, variant = _pick_run_pair(base_runs, runs)
    for name in offline_table.METRICS_BY_NAME:
      metric = compare_offline.metric_of(name, base.offline)
      if metric is not None and compare_offline.metric_of(name, variant.offline) is not None:
        cache.delta(metric, base.offline, variant.offline)


def build_tables(variants: Dict[str, List[ReplayRun]], baseline: str,
                 options: BootstrapOptions) -> pd.DataFrame:
  """The long table: one row per (variant, metric) with CI and delta vs the baseline."""
  values = {label: [run_values(run) for run in runs]
            for label, runs in variants.items()}
  names = _ordered_metric_names([v for label in variants for v in values[label]]
                                + [run.unavailable for r in variants.values() for run in r])
  offline_cache = compare_offline.OfflineIntervals(options.n_boot, options.seed)
  _prime_offline(variants, baseline, offline_cache)
  rows = []
  for label, runs in variants.items():
    for name in names:
      row = {"variant": label, "metric": name}
      row.update(summarize_metric(runs, values[label], name, METRICS_BY_NAME.get(name), options,
                                  offline_cache))
      reasons = [run.unavailable[name] for run in runs if name in run.unavailable]
      if reasons:
        row["null_reason"] = reasons[0]
      elif row["n_seeds"] == 0:
        continue
      if label != baseline and not reasons:
        row.update(metric_delta(variants[baseline], values[baseline], runs, values[label],
                                name, METRICS_BY_NAME.get(name), options, offline_cache))
      rows.append(row)
  return pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)
