"""Lay replay runs side by side: every metric per variant with a 95% CI, and deltas vs a baseline.

  python -m experiments.compare --run_dirs=runs/base_s*,runs/pfd_s* --report_dir=reports/pfd \
      [--baseline=LABEL_OR_RUN_DIR] [--allow_mixed_worlds] [--flagfile=...]

Each run dir is written by `python -m experiments.replay`: `summary.json` (label, seed, day,
world hash, flat metrics) and a per-request Parquet file. Runs with the same label are seeds of
one variant. The baseline is `--baseline` or the first run given.

How intervals are computed (also written into the report):
  * a variant with >= 2 seeds: mean over seeds with a Student-t 95% CI;
  * a variant with 1 seed: a percentile bootstrap over users (or requests) of the per-request
    outcomes, for every metric that per_request.parquet can recompute; none otherwise;
  * deltas: paired by seed with a t CI when >= 2 seeds are shared; Welch's t when both sides
    have >= 2 seeds but do not share them; otherwise a bootstrap over the per-request outcomes,
    paired by request_id when both runs replayed the same requests.

Outputs (each file written to a temp name, then renamed into place): report.md, tables.csv
(long format) and plots/*.png.
"""

import dataclasses
import glob
import json
import math
import os
from typing import Callable, Dict, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
import pandas as pd

from data import files
from data import intervals

FLAGS = flags.FLAGS
flags.DEFINE_list("run_dirs", None, "Replay run dirs to compare; glob patterns are expanded.")
flags.DEFINE_string("report_dir", None, "Where report.md, tables.csv and plots/ are written.")
flags.DEFINE_string("baseline", None, "Label or run dir of the baseline (default: first run).")
flags.DEFINE_bool("allow_mixed_worlds", False, "Compare runs of different worlds anyway.")
flags.DEFINE_integer("n_boot", 1000, "Bootstrap replicates for per-request CIs.")
flags.DEFINE_integer("bootstrap_seed", 0, "Seed of the bootstrap resampling.")
flags.DEFINE_enum("bootstrap_unit", "user", ["user", "request"],
                  "Resample whole users (requests of a user are correlated) or requests.")

REPLAY_COMMAND = "python -m experiments.replay"
# Per-request columns that identify a request rather than measure it.
ID_COLUMNS = frozenset({"request_id", "user_id", "day", "seed", "timestamp", "time", "hour"})
# Requests two runs must share (as a share of the smaller run) to be compared request by request.
MIN_PAIRED_OVERLAP = 0.5


class CompareInputError(Exception):
  """Input compare cannot use; the message says what is wrong and what to do."""


@dataclasses.dataclass
class ReplayRun:
  """One finished `experiments.replay` run, as compare needs it."""
  run_dir: str
  label: str
  seed: int
  day: object
  world_hash: str
  metrics: Dict[str, float]  # numeric metrics of summary.json, flat names
  per_request: pd.DataFrame


@dataclasses.dataclass(frozen=True)
class PerRequestMetric:
  """A metric recomputable from per_request.parquet: scale * sum(numerator) / sum(denominator).

  Without a denominator it is the mean over requests (times scale).
  """
  name: str
  numerator: str
  denominator: Optional[str] = None
  scale: float = 1.0

  def arrays(self, frame: pd.DataFrame, suffix: str = ""):
    """(scaled numerators, denominators or None) for a bootstrap over the frame's rows."""
    def column(name):
      return frame[name + suffix].to_numpy(np.float64, na_value=np.nan)
    numerator = column(self.numerator) * self.scale
    return numerator, (None if self.denominator is None else column(self.denominator))

  def value(self, frame: pd.DataFrame) -> float:
    numerator, denominator = self.arrays(frame)
    if denominator is None:
      denominator = np.ones_like(numerator)
    keep = ~(np.isnan(numerator) | np.isnan(denominator))
    total = denominator[keep].sum()
    return float(numerator[keep].sum() / total) if total else float("nan")


@dataclasses.dataclass(frozen=True)
class BootstrapOptions:
  n_boot: int = 1000
  seed: int = 0
  unit: str = "user"  # "user" or "request"


# ---------------------------------------------------------------------------------------------
# Loading and checking runs
# ---------------------------------------------------------------------------------------------


def expand_run_dirs(patterns: Sequence[str]) -> List[str]:
  """Run dirs from paths and glob patterns, in the order given, without duplicates."""
  run_dirs, seen = [], set()
  for pattern in patterns:
    if glob.has_magic(pattern):
      matches = sorted(path for path in glob.glob(pattern) if os.path.isdir(path))
      if not matches:
        raise CompareInputError(f"--run_dirs pattern {pattern!r} matches no directory")
    else:
      matches = [pattern]
    for path in matches:
      if os.path.realpath(path) not in seen:
        seen.add(os.path.realpath(path))
        run_dirs.append(path)
  if not run_dirs:
    raise CompareInputError("--run_dirs is empty: give replay run dirs or glob patterns")
  return run_dirs


def _flat_numeric(tree: dict, prefix: str = "") -> Dict[str, float]:
  """Numeric leaves of a (possibly nested) dict under '/'-joined names; bools are not metrics."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(_flat_numeric(value, name + "/"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      flat[name] = float(value)
  return flat


def _read_summary(run_dir: str) -> dict:
  if not os.path.isdir(run_dir):
    raise CompareInputError(
        f"{run_dir}: no such directory; replay runs are written by `{REPLAY_COMMAND}`")
  path = os.path.join(run_dir, "summary.json")
  if not os.path.exists(path):
    raise CompareInputError(
        f"{run_dir}: no summary.json, so it is not a finished replay run "
        f"(`{REPLAY_COMMAND}` writes it when a replay completes)")
  try:
    with open(path) as file:
      summary = json.load(file)
  except json.JSONDecodeError as error:
    raise CompareInputError(f"{path}: not valid JSON ({error})") from error
  if summary.get("format") != 1:
    raise CompareInputError(f"{path}: summary format {summary.get('format')!r}, expected 1")
  missing = [key for key in ("label", "world_hash", "metrics") if key not in summary]
  if missing:
    raise CompareInputError(f"{path}: missing {', '.join(missing)}")
  return summary


def load_run(run_dir: str) -> ReplayRun:
  """Reads a replay run dir, failing with a message that names the command that makes one."""
  summary = _read_summary(run_dir)
  per_request_path = os.path.join(run_dir, summary.get("per_request_file",
                                                       "per_request.parquet"))
  if not os.path.exists(per_request_path):
    raise CompareInputError(
        f"{run_dir}: summary.json names {os.path.basename(per_request_path)} but it is "
        f"missing; re-run `{REPLAY_COMMAND}`")
  return ReplayRun(run_dir=run_dir, label=str(summary["label"]),
                   seed=int(summary.get("seed", 0)), day=summary.get("day"),
                   world_hash=str(summary["world_hash"]),
                   metrics=_flat_numeric(summary["metrics"]),
                   per_request=pd.read_parquet(per_request_path))


def check_same_world(runs: Sequence[ReplayRun], allow_mixed_worlds: bool) -> None:
  """Refuses runs of different worlds: their numbers measure different things."""
  by_world: Dict[str, List[str]] = {}
  for run in runs:
    by_world.setdefault(run.world_hash, []).append(run.run_dir)
  if len(by_world) > 1 and not allow_mixed_worlds:
    listing = "; ".join(f"{world}: {', '.join(dirs)}" for world, dirs in by_world.items())
    raise CompareInputError(
        f"runs come from different worlds (world_hash {listing}); compare runs of one world "
        "or pass --allow_mixed_worlds")


def group_variants(runs: Sequence[ReplayRun]) -> Dict[str, List[ReplayRun]]:
  """Runs by label, in order of first appearance; one label's runs are its seeds."""
  variants: Dict[str, List[ReplayRun]] = {}
  for run in runs:
    for other in variants.get(run.label, []):
      if other.seed == run.seed:
        raise CompareInputError(
            f"{other.run_dir} and {run.run_dir} both have label {run.label!r} and seed "
            f"{run.seed}; give them different labels or seeds")
    variants.setdefault(run.label, []).append(run)
  return variants


def resolve_baseline(variants: Dict[str, List[ReplayRun]], baseline: Optional[str]) -> str:
  """The baseline's label, from a label or a run dir; default: the first run's label."""
  if not baseline:
    return next(iter(variants))
  if baseline in variants:
    return baseline
  for label, runs in variants.items():
    if any(os.path.realpath(run.run_dir) == os.path.realpath(baseline) for run in runs):
      return label
  raise CompareInputError(
      f"unknown baseline {baseline!r}: it is neither a label ({', '.join(variants)}) nor one "
      "of the run dirs")


# ---------------------------------------------------------------------------------------------
# Which metrics, and their values per run
# ---------------------------------------------------------------------------------------------


def _numeric_columns(frame: pd.DataFrame) -> List[str]:
  return [column for column in frame.select_dtypes(include=["number", "bool"]).columns
          if column not in ID_COLUMNS and not column.endswith("_id")]


def _summary_name_for(column: str, summary_names: Sequence[str]) -> str:
  """The summary metric a per-request column averages to (e.g. survival_coarse ->
  survival/coarse, kendall_tau -> cascade/kendall_tau), else per_request/<column>."""
  for name in summary_names:
    if name.replace("/", "_") == column or name.rsplit("/", 1)[-1] == column:
      return name
  return f"per_request/{column}"


def per_request_metrics(runs: Sequence[ReplayRun]) -> Dict[str, PerRequestMetric]:
  """Every metric the runs' per-request files can recompute, by metric name.

  exp_X and oracle_X become online/exp_X_per_1k and online/oracle_X_per_1k; exp_X with an
  oracle_X becomes online/share_of_oracle_X (ratio of sums); any other numeric column is a
  per-request mean named after the summary metric it matches.
  """
  summary_names = sorted({name for run in runs for name in run.metrics})
  definitions: Dict[str, PerRequestMetric] = {}
  for run in runs:
    columns = _numeric_columns(run.per_request)
    for column in columns:
      found: List[PerRequestMetric] = []
      if column.startswith(("exp_", "oracle_")):
        found.append(PerRequestMetric(f"online/{column}_per_1k", column, scale=1000.0))
        outcome = column[len("exp_"):]
        if column.startswith("exp_") and f"oracle_{outcome}" in columns:
          found.append(PerRequestMetric(f"online/share_of_oracle_{outcome}", column,
                                        f"oracle_{outcome}"))
      else:
        found.append(PerRequestMetric(_summary_name_for(column, summary_names), column))
      for definition in found:
        definitions.setdefault(definition.name, definition)
  return definitions


def _usable(definition: Optional[PerRequestMetric], frame: pd.DataFrame) -> bool:
  return definition is not None and all(
      column in frame for column in (definition.numerator, definition.denominator) if column)


def run_values(run: ReplayRun, definitions: Dict[str, PerRequestMetric]) -> Dict[str, float]:
  """A run's value of every metric: summary.json first, per-request recomputation second."""
  values = dict(run.metrics)
  for name, definition in definitions.items():
    if name not in values and _usable(definition, run.per_request):
      values[name] = definition.value(run.per_request)
  return values


def _agrees_with_summary(run: ReplayRun, definition: PerRequestMetric) -> bool:
  """Whether a per-request bootstrap describes the number summary.json reports."""
  if definition.name not in run.metrics:
    return True
  recomputed = definition.value(run.per_request)
  reported = run.metrics[definition.name]
  agrees = math.isclose(recomputed, reported, rel_tol=1e-6, abs_tol=1e-9)
  if not agrees:
    logging.warning("%s: %s is %g in summary.json but %g from the per-request file; no "
                    "bootstrap CI for it", run.run_dir, definition.name, reported, recomputed)
  return agrees


# ---------------------------------------------------------------------------------------------
# Intervals per variant and deltas vs the baseline
# ---------------------------------------------------------------------------------------------


def _bootstrap_groups(frame: pd.DataFrame, options: BootstrapOptions, column="user_id"):
  return frame[column].to_numpy() if options.unit == "user" and column in frame else None


def _unit_name(frame: pd.DataFrame, options: BootstrapOptions) -> str:
  return "users" if _bootstrap_groups(frame, options) is not None else "requests"


def summarize_metric(runs: Sequence[ReplayRun], values: Sequence[Dict[str, float]],
                     name: str, definition: Optional[PerRequestMetric],
                     options: BootstrapOptions) -> dict:
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
    if _usable(definition, run.per_request) and _agrees_with_summary(run, definition):
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


def _request_level_delta(base: ReplayRun, variant: ReplayRun, definition: PerRequestMetric,
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
                 definition, options) -> dict:
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
  if (_usable(definition, base.per_request) and _usable(definition, variant.per_request)
      and _agrees_with_summary(base, definition) and _agrees_with_summary(variant, definition)):
    return _request_level_delta(base, variant, definition, options)
  base_mean = float(np.mean(list(base_by_seed.values())))
  delta = float(np.mean(list(variant_by_seed.values()))) - base_mean
  return _delta_row(delta, float("nan"), float("nan"), base_mean,
                    "none (one seed and no per-request outcome)")


def _ordered_metric_names(values: Sequence[Dict[str, float]]) -> List[str]:
  """Metric names in first-seen order: summary metrics as replay wrote them, derived after."""
  names: Dict[str, None] = {}
  for run_values_ in values:
    names.update(dict.fromkeys(run_values_))
  return list(names)


def build_tables(variants: Dict[str, List[ReplayRun]], baseline: str,
                 options: BootstrapOptions) -> pd.DataFrame:
  """The long table: one row per (variant, metric) with CI and delta vs the baseline."""
  all_runs = [run for runs in variants.values() for run in runs]
  definitions = per_request_metrics(all_runs)
  values = {label: [run_values(run, definitions) for run in runs]
            for label, runs in variants.items()}
  names = _ordered_metric_names([v for label in variants for v in values[label]])
  rows = []
  for label, runs in variants.items():
    for name in names:
      row = {"variant": label, "metric": name}
      row.update(summarize_metric(runs, values[label], name, definitions.get(name), options))
      if row["n_seeds"] == 0:
        continue
      if label != baseline:
        row.update(metric_delta(variants[baseline], values[baseline], runs, values[label],
                                name, definitions.get(name), options))
      rows.append(row)
  columns = ["variant", "metric", "mean", "ci_lo", "ci_hi", "n_seeds", "ci_method", "delta",
             "delta_lo", "delta_hi", "rel_delta", "rel_lo", "rel_hi", "delta_method"]
  return pd.DataFrame(rows).reindex(columns=columns)


# ---------------------------------------------------------------------------------------------
# Report, tables and plots
# ---------------------------------------------------------------------------------------------


def _number(value: float, signed: bool = False) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return f"{value:+.4g}" if signed else f"{value:.4g}"


def _interval(low: float, high: float, signed: bool = False) -> str:
  if any(isinstance(x, float) and math.isnan(x) for x in (low, high)):
    return ""
  return f" [{_number(low, signed)}, {_number(high, signed)}]"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def _pivot_cells(table: pd.DataFrame, variants: Sequence[str],
                 cell: Callable[[pd.Series], str]) -> List[List[str]]:
  """One Markdown row per metric, one cell per variant (blank where the variant lacks it)."""
  rows = []
  for metric in dict.fromkeys(table["metric"]):
    by_variant = {row.variant: row for row in table[table.metric == metric].itertuples()}
    rows.append([metric] + [cell(by_variant[v]) if v in by_variant else "" for v in variants])
  return rows


def metrics_markdown(table: pd.DataFrame, variants: Dict[str, List[ReplayRun]]) -> str:
  """Every metric per variant: mean [95% CI]."""
  header = ["metric"] + [f"{label} ({len(runs)} seed{'s' * (len(runs) > 1)})"
                         for label, runs in variants.items()]
  return _markdown_table(header, _pivot_cells(
      table, list(variants), lambda row: _number(row.mean) + _interval(row.ci_lo, row.ci_hi)))


def deltas_markdown(table: pd.DataFrame, variants: Sequence[str], baseline: str) -> str:
  """Every metric's delta vs the baseline: absolute [CI] and relative [CI]."""
  others = [label for label in variants if label != baseline]

  def cell(row) -> str:
    if isinstance(row.delta, float) and math.isnan(row.delta):
      return ""
    relative = ("" if math.isnan(row.rel_delta) else
                f" ({row.rel_delta:+.2%}{_percent_interval(row.rel_lo, row.rel_hi)})")
    return _number(row.delta, True) + _interval(row.delta_lo, row.delta_hi, True) + relative
  return _markdown_table(["metric"] + [f"{label} - {baseline}" for label in others],
                         _pivot_cells(table, others, cell))


def _percent_interval(low: float, high: float) -> str:
  if math.isnan(low) or math.isnan(high):
    return ""
  return f" [{low:+.2%}, {high:+.2%}]"


def _methods_markdown(table: pd.DataFrame, column: str) -> str:
  """Which interval method each variant's figures used, with how many metrics used it."""
  lines = []
  for label, rows in table.groupby("variant", sort=False):
    counts = rows[column].dropna().value_counts()
    if len(counts):
      lines.append(f"- {label}: " + "; ".join(f"{method} ({n} metric{'s' * (n > 1)})"
                                              for method, n in counts.items()))
  return "\n".join(lines)


_RESAMPLED_UNITS = {"user": "users (all requests of a resampled user together)",
                    "request": "requests"}


def _interval_note(options: BootstrapOptions) -> str:
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


def report_markdown(table, variants, baseline, options, plot_names) -> str:
  """The whole report.md."""
  runs = [run for label_runs in variants.values() for run in label_runs]
  run_rows = [[run.run_dir, run.label, str(run.seed), str(run.day), run.world_hash]
              for run in runs]
  parts = [
      f"# Replay comparison\n\nBaseline: **{baseline}**. {len(runs)} runs, "
      f"{len(variants)} variants, worlds: {', '.join(sorted({r.world_hash for r in runs}))}.",
      "## Metrics (mean [95% CI])", metrics_markdown(table, variants),
      f"## Deltas vs {baseline} (variant - baseline [95% CI], relative [95% CI])",
      deltas_markdown(table, list(variants), baseline),
      "## How the intervals were computed",
      _interval_note(options),
      "Variant intervals:\n" + _methods_markdown(table, "ci_method"),
      "Delta intervals:\n" + _methods_markdown(table, "delta_method"),
      "## Plots\n" + "\n".join(f"![{name}](plots/{name})" for name in plot_names),
      "## Runs", _markdown_table(["run dir", "label", "seed", "day", "world hash"], run_rows),
  ]
  return "\n\n".join(parts) + "\n"


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
  if _plot_bars(table, variants, [m for m in metric_names if m.startswith("survival/")],
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


# ---------------------------------------------------------------------------------------------
# Program
# ---------------------------------------------------------------------------------------------


def compare(run_dirs: Sequence[str], report_dir: str, baseline: Optional[str] = None,
            allow_mixed_worlds: bool = False,
            options: BootstrapOptions = BootstrapOptions()) -> str:
  """Compares replay runs and writes the report; returns the path of report.md.

  Raises CompareInputError for input it cannot use (missing or unfinished runs, mixed worlds,
  an unknown baseline, an empty glob).
  """
  runs = [load_run(run_dir) for run_dir in expand_run_dirs(run_dirs)]
  check_same_world(runs, allow_mixed_worlds)
  variants = group_variants(runs)
  baseline_label = resolve_baseline(variants, baseline)
  table = build_tables(variants, baseline_label, options)
  plots_dir = os.path.join(report_dir, "plots")
  os.makedirs(plots_dir, exist_ok=True)
  plot_names = write_plots(table, list(variants), plots_dir)
  files.write_with(os.path.join(report_dir, "tables.csv"),
                    lambda temp_path: table.to_csv(temp_path, index=False))
  report_path = os.path.join(report_dir, "report.md")
  files.write_text(report_path, report_markdown(table, variants, baseline_label, options,
                                           plot_names))
  print(metrics_markdown(table, variants))
  print(f"\nreport: {report_path}")
  return report_path


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    compare(FLAGS.run_dirs or [], FLAGS.report_dir, FLAGS.baseline, FLAGS.allow_mixed_worlds,
            BootstrapOptions(FLAGS.n_boot, FLAGS.bootstrap_seed, FLAGS.bootstrap_unit))
  except CompareInputError as error:
    raise SystemExit(f"compare: {error}") from None


def run() -> None:
  """Console-script entry point (pfd-compare)."""
  flags.mark_flags_as_required(["run_dirs", "report_dir"])
  app.run(main)


if __name__ == "__main__":
  run()
