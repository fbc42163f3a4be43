"""A replay's run directory: resumable chunks while it runs, two files when it is done.

  R/.partial/config.json             the replay key (what the results depend on)
  R/.partial/chunk-NNNNN.parquet     one finished batch of per-request rows
  R/.partial/chunk-NNNNN.json        its wall-clock seconds per step
  R/per_request.parquet              every request (experiments.request_table)
  R/offline_scores.parquet           every logged impression of the day, each model's score
                                     (experiments.offline_table)
  R/summary.json                     format 1: label, seed, day, world_hash, config, models,
                                     flat metrics; written last, so it marks a finished replay

A rerun with the same key skips the finished chunks; another key is refused unless the caller
overwrites. Every file is written atomically (data.plumbing.files).
"""

import contextlib
import hashlib
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.plumbing import files
from data.plumbing.command import UserError

PARTIAL = ".partial"
SUMMARY = "summary.json"
PER_REQUEST = "per_request.parquet"
OFFLINE_SCORES = "offline_scores.parquet"  # experiments.offline_table
SUMMARY_FORMAT = 1


class RunDir:
  """R/.partial/chunk-NNNNN.{json,parquet} while running; summary.json + per_request.parquet
  when done. A chunk's Parquet file is renamed into place last, so it marks a finished chunk."""

  def __init__(self, path: str):
    self.path = path
    self.partial = os.path.join(path, PARTIAL)
    self._created: List[str] = []  # what start() made (the run dir, .partial), outermost first

  def _chunk(self, index: int, ext: str) -> str:
    return os.path.join(self.partial, f"chunk-{index:05d}.{ext}")

  def start(self, key: Dict[str, Any], overwrite: bool) -> Optional[dict]:
    """Prepares the dir for `key`; returns the summary if this replay already finished."""
    summary_path = os.path.join(self.path, SUMMARY)
    if os.path.exists(summary_path) and not overwrite:
      summary = files.read_json(summary_path)
      if summary.get("replay_key") == key_digest(key):
        return summary
      raise UserError(f"{self.path} already holds a finished replay with another "
                      "configuration; use another --run_dir or pass --overwrite")
    config_path = os.path.join(self.partial, "config.json")
    if os.path.exists(config_path) and not overwrite:
      held = files.read_json(config_path)
      if held != key:
        changed = sorted(name for name in set(held) | set(key) if held.get(name) != key.get(name))
        raise UserError(
            f"{self.partial} holds an unfinished replay with another configuration (differs "
            f"in {', '.join(changed)}); rerun with the same flags to resume, or pass --overwrite")
    elif overwrite:
      self.clear()
    self._created = [p for p in (self.path, self.partial, config_path)
                     if not os.path.exists(p)]
    with self.abandoned_on_error():
      os.makedirs(self.partial, exist_ok=True)
      files.write_json(config_path, key)
    return None

  @contextlib.contextmanager
  def abandoned_on_error(self) -> Iterator[None]:
    """On an error before any chunk is finished, removes what `start` created (config.json,
    .partial, the run dir), so a refused or failed replay leaves nothing behind; a replay
    that finished chunks keeps them, to resume."""
    try:
      yield
    except BaseException:
      listed = os.listdir(self.partial) if os.path.isdir(self.partial) else []
      if not any(name.endswith(".parquet") for name in listed):
        for path in reversed(self._created):  # config.json, .partial, then the run dir
          if path == self.path and os.path.isdir(path) and os.listdir(path):
            continue  # something else is in it now: not ours to remove
          files.remove_tree(path)
      raise

  def clear(self) -> None:
    for name in (SUMMARY, PER_REQUEST, OFFLINE_SCORES):
      files.remove_tree(os.path.join(self.path, name))
    files.remove_tree(self.partial)

  def chunk_done(self, index: int) -> bool:
    return os.path.exists(self._chunk(index, "parquet"))

  def write_chunk(self, index: int, table: pa.Table, seconds: Dict[str, float]) -> None:
    files.write_json(self._chunk(index, "json"), seconds)
    files.write_parquet(self._chunk(index, "parquet"), table)

  def read_chunks(self, n_chunks: int) -> Tuple[pa.Table, List[Dict[str, float]]]:
    tables = [pq.read_table(self._chunk(i, "parquet")) for i in range(n_chunks)]
    seconds = [files.read_json(self._chunk(i, "json")) for i in range(n_chunks)]
    return pa.concat_tables(tables), seconds

  def finish(self, table: pa.Table, summary: dict,
             offline: Optional[pd.DataFrame] = None) -> None:
    """per_request.parquet (and offline_scores.parquet), then summary.json (the finished
    marker), then drop .partial."""
    files.write_parquet(os.path.join(self.path, PER_REQUEST), table)
    if offline is not None:
      files.write_parquet(os.path.join(self.path, OFFLINE_SCORES),
                          pa.Table.from_pandas(offline, preserve_index=False))
    files.write_json(os.path.join(self.path, SUMMARY), summary)
    files.remove_tree(self.partial)


def key_digest(key: Dict[str, Any]) -> str:
  """The replay key's digest, kept in summary.json as replay_key."""
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def speed_metrics(seconds: Sequence[Dict[str, float]], n_requests: int) -> Dict[str, float]:
  """Latency per stage (ms per request) and throughput, summed over every chunk's batch."""
  total = {name: sum(s.get(name, 0.0) for s in seconds)
           for name in ("retrieval", "coarse", "fine", "oracle", "cascade", "total")}
  per_request_ms = 1000.0 / max(n_requests, 1)
  out = {f"latency/{name}_ms": total[name] * per_request_ms
         for name in ("retrieval", "coarse", "fine", "oracle", "cascade")}
  funnel_seconds = total["retrieval"] + total["coarse"] + total["fine"]
  out["throughput/requests_per_second"] = n_requests / total["total"] if total["total"] else 0.0
  out["throughput/funnel_requests_per_second"] = (n_requests / funnel_seconds
                                                  if funnel_seconds else 0.0)
  return out


# summary.json's config flag -> the model (summary["models"]) whose recorded variant it names.
VARIANT_FLAGS = {"coarse_variant": "coarse", "ctr_variant": "fine_ctr",
                 "cvr_variant": "fine_cvr"}


def identity_problems(summary: Dict[str, Any]) -> List[str]:
  """Where a finished replay's flags name a variant its model's own record contradicts (an
  export dir renamed before the replay, e.g. fine/cvr/pfd moved to baseline): compare would
  present one variant's rows under another's name."""
  config, models = summary.get("config") or {}, summary.get("models") or {}
  problems = []
  for flag, name in VARIANT_FLAGS.items():
    recorded = (models.get(name) or {}).get("variant")
    if flag in config and recorded is not None and recorded != config[flag]:
      problems.append(f"--{flag}={config[flag]} served the {name} model at "
                      f"{models[name].get('path')}, which records variant {recorded!r}")
  return problems
