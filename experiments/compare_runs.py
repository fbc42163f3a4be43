"""Loading replay runs for compare: read, check one world, group seeds by label, baseline.

A run dir is what `experiments.replay` writes (experiments.run_dir): summary.json and the
per-request table. Runs with the same label are seeds of one variant.
"""

import dataclasses
import glob
import json
import os
from typing import Dict, List, Optional, Sequence

import pandas as pd

from data.plumbing.command import UserError
from experiments import run_dir as run_dir_lib
from experiments.run_dir import OFFLINE_SCORES

REPLAY_COMMAND = "python -m experiments.replay"


class CompareInputError(UserError):
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
  # Figures the run could not compute ({name: reason}): the oracle-only ones on real logs, an
  # AUC without positives, a Kendall tau of a constant ranking.
  unavailable: Dict[str, str] = dataclasses.field(default_factory=dict)
  # Every logged impression of the day with each model's score (experiments.offline_table);
  # None for runs written before it was kept.
  offline: Optional[pd.DataFrame] = None


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
  problems = run_dir_lib.identity_problems(summary)
  if problems:
    raise CompareInputError(f"{path}: {'; '.join(problems)}: its label would name the wrong "
                            "model; replay again with the right variant")
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
  offline_path = os.path.join(run_dir, OFFLINE_SCORES)
  offline = pd.read_parquet(offline_path) if os.path.exists(offline_path) else None
  return ReplayRun(run_dir=run_dir, label=str(summary["label"]),
                   seed=int(summary.get("seed", 0)), day=summary.get("day"),
                   world_hash=str(summary["world_hash"]),
                   metrics=_flat_numeric(summary["metrics"]),
                   per_request=pd.read_parquet(per_request_path),
                   unavailable=dict(summary.get("unavailable") or {}), offline=offline)


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
