"""Replay a held-out day through the trained funnel and score it against the world's oracle.

  python -m experiments.replay --world_dir=W --model_dir=M --run_dir=R --day=8 \
      --funnel=retrieval:1000,coarse:100,fine:10 --coarse_variant=pfd_md --cvr_variant=pfd \
      --ctr_variant=baseline --rank_by=ctcvr_gmv [--label=...] [--seed=0] [--max_requests=0] \
      [--batch_requests=256] [--cascade_sample=0] [--store_retrieved] [--overwrite]

Every request of the day goes, in batches, through the exported stages: the retrieval index
returns N1 items of the whole corpus; the coarse two-tower scores them (one matrix product) and
keeps N2; the fine CTR and CVR models score those N2 on their point-in-time features and show
the top K by `--rank_by` (ctr: pCTR, ctcvr: pCTR*pCVR, ctcvr_gmv: pCTR*pCVR*price), at
positions 0..K-1 in that order.

The oracle then says what each page earns in expectation (clicks, conversions, GMV) and what
the best page of K over the whole corpus would earn on the objective the page was ranked by;
per stage, how many of those best items survive; how well coarse agrees with fine on the N1
(coarse->fine recall, and Kendall tau between the coarse score and the fine stage's ranking
score, i.e. the --rank_by objective); offline AUC / GAUC of each model on the day's logged
impressions; and wall-clock latency per stage. The cascade figures need the fine models on all
N1 candidates, the replay's most expensive step (~50 ms of CPU per request at N1 = 1000), so
`--cascade_sample` limits them to a seeded subset of requests (summary: cascade/n_requests).

Outputs, read by `experiments.compare`: R/summary.json and R/per_request.parquet, whose
columns and summary metrics `experiments.request_table` declares. The run is resumable
(`experiments.run_dir`): a rerun with the same configuration skips the finished batches.
With --runner=ray (data.plumbing.engine) the unfinished chunks are served by Ray workers, a
contiguous range each, and gathered here as before: the same summary but for the timings.

This module keeps the configuration, the replay loop and the command; the funnel's stages are
in `experiments.funnel`, the oracle's best page in `data.world.best_page`.
"""

import dataclasses
import os
import time
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from absl import flags
from absl import logging
import numpy as np
import pandas as pd
import pyarrow as pa

import data
from data.plumbing import command
from data.plumbing import engine as engine_lib
from data.plumbing import files
from data.plumbing import progress
from data.plumbing.command import UserError
from data.plumbing.command import field as _field
from data.world import best_page as best_page_lib
from experiments import funnel as funnel_lib
from experiments import offline_table
from experiments import replay_defaults
from experiments import request_table
from experiments import run_dir as run_dir_lib
from models import ann
from stages import catalogue
from stages import serving

# The oracle outcome each objective is the expected value of (the property-tested one).
OBJECTIVE_OUTCOME = {"ctr": "clicks", "ctcvr": "conversions", "ctcvr_gmv": "gmv"}
CASCADE_ROWS = 1 << 15  # (request, candidate) rows the fine models score at once for the cascade
DEFAULT_FUNNEL = "retrieval:1000,coarse:100,fine:10"


@dataclasses.dataclass
class ReplayConfig:
  """One replay; the command's flags are generated from these fields (data.plumbing.command), and
  tests and experiments.paper build it directly. The funnel's sizes are passed beside it."""
  world_dir: str = dataclasses.field(metadata={
      "help": "The world's directory: written by `python -m data.generate`."})
  model_dir: str = dataclasses.field(metadata={
      "help": "Root of trained models (the stage commands' --model_dir)."})
  run_dir: str = dataclasses.field(metadata={
      "help": "Where summary.json and per_request.parquet are written."})
  day: Optional[int] = _field(None, "The held-out day to replay (--eval_day is the same flag, "
                              "the stages' name for it). Default: the world's eval day.")
  coarse_variant: str = _field("pfd_md", "Coarse model: MODEL_DIR/coarse/<variant>.",
                                choices=catalogue.COARSE.variants())
  cvr_variant: str = _field("pfd", "Fine CVR model: MODEL_DIR/fine/cvr/<variant>; none: no "
                            "CVR model (pages ranked by pCTR, --rank_by=ctr).",
                            choices=catalogue.FINE_CVR.variants() + (funnel_lib.NO_CVR,))
  ctr_variant: str = _field("baseline", "Fine CTR model: MODEL_DIR/fine/ctr/<variant>.",
                             choices=catalogue.FINE_CTR.variants())
  rank_by: str = _field("ctcvr_gmv", "What the fine stage sorts the page by: ctr = pCTR, "
                         "ctcvr = pCTR*pCVR, ctcvr_gmv = pCTR*pCVR*price.",
                         choices=funnel_lib.OBJECTIVES)
  label: Optional[str] = _field(None, "Run label for compare. Default: "
                                 "coarse=<v>,cvr=<v>[,...].")
  seed: int = _field(0, "Seed of the request subset and the cascade sample.")
  max_requests: int = _field(0, "Replay a seeded random subset of this many requests "
                              "(0: every request of the day).")
  batch_requests: int = _field(256, "Requests per batch (and per resumable chunk).")
  cascade_sample: int = _field(0, "Score the N1 candidates with the fine models for a seeded "
                                "random subset of this many requests (0: all) for coarse->fine "
                                "recall and Kendall tau.")
  index: str = _field(ann.DEFAULT_INDEX, "How retrieval searches the corpus (models.ann): "
                      "faiss_ivf (FAISS IVF over the export's item vectors, approximate; the "
                      "index saved with the export, else built here), faiss_hnsw, or "
                      "brute_force (the export's exact TFRS index).", choices=ann.INDEXES)
  store_retrieved: bool = _field(False, "Also store retrieval's N1 ids per request.")
  overwrite: bool = _field(False, "Replace a finished or unfinished replay in --run_dir "
                            "instead of refusing.")
  log_every_batches: int = _field(10, "Log progress every this many batches.")
  oracle_block_pairs: int = _field(1 << 20, "(request, item) pairs the oracle's best-page "
                                    "search evaluates at once (bounds its memory).")
  oracle_cache_dir: Optional[str] = _field(
      None, "Keep the oracle's best pages here and reuse them in later replays of the same "
      "world, day, page size and objective (they depend on nothing else). Default: no cache.")

  def __post_init__(self):
    """Refuses values no replay can use, naming the flag."""
    for name in ("max_requests", "cascade_sample", "seed"):
      if getattr(self, name) < 0:
        raise UserError(f"--{name} must be >= 0 (0: {'all' if name != 'seed' else 'seed 0'}), "
                        f"got {getattr(self, name)}")
    for name in ("batch_requests", "log_every_batches", "oracle_block_pairs"):
      if getattr(self, name) <= 0:
        raise UserError(f"--{name} must be positive, got {getattr(self, name)}")

  def run_label(self) -> str:
    """--label, or the variants that make this run differ from the default funnel."""
    if self.label:
      return self.label
    label = f"coarse={self.coarse_variant},cvr={self.cvr_variant}"
    if self.ctr_variant != "baseline":
      label += f",ctr={self.ctr_variant}"
    if self.rank_by != "ctcvr_gmv":
      label += f",rank_by={self.rank_by}"
    if self.index != ann.DEFAULT_INDEX:
      label += f",index={self.index}"
    return label

  def variants(self) -> Dict[str, str]:
    return {"coarse": self.coarse_variant, "fine_ctr": self.ctr_variant,
            "fine_cvr": self.cvr_variant}


# Config fields that do not change a replay's per-request results (a resumed run may differ).
_NOT_RESULTS = ("world_dir", "model_dir", "run_dir", "label", "overwrite", "log_every_batches",
                "oracle_block_pairs", "oracle_cache_dir")


# ---------------------------------------------------------------------------------------------
# One batch of requests end to end
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DayRequests:
  """The requests a replay serves, in order, with their user-side columns."""
  request_ids: np.ndarray           # int64[n], ascending
  queries: Dict[str, np.ndarray]    # user profile, behaviour sequence, context; row i = request i
  in_cascade_sample: np.ndarray     # bool[n]: fine also scores this request's N1

  def batch(self, start: int, stop: int) -> Tuple[np.ndarray, Dict[str, np.ndarray], np.ndarray]:
    return (self.request_ids[start:stop], {k: v[start:stop] for k, v in self.queries.items()},
            self.in_cascade_sample[start:stop])


def select_requests(world, day: int, config: ReplayConfig) -> DayRequests:
  """Every request of `day` (or a seeded subset of --max_requests), and the cascade sample."""
  request_ids = np.sort(world.request_arrays([day], ["request_id"])["request_id"])
  if not len(request_ids):
    raise UserError(f"day {day} of the world at {world.world_dir} has no requests")
  rng = np.random.default_rng([config.seed, day])
  if 0 < config.max_requests < len(request_ids):
    request_ids = np.sort(rng.choice(request_ids, config.max_requests, replace=False))
  in_sample = np.ones(len(request_ids), bool)
  if 0 < config.cascade_sample < len(request_ids):
    in_sample[:] = False
    in_sample[rng.choice(len(request_ids), config.cascade_sample, replace=False)] = True
  return DayRequests(request_ids, serving.request_rows(world, [day], request_ids), in_sample)


def page_outcomes(oracle, request_ids: np.ndarray, page_ids: np.ndarray) -> Dict[str, np.ndarray]:
  """Expected clicks, conversions and GMV of each page (item j shown at position j): [n] each."""
  expected = oracle.expected_outcomes(request_ids, page_ids,
                                      positions=np.arange(page_ids.shape[1]))
  return {"clicks": expected["click"].sum(1), "conversions": expected["conversion"].sum(1),
          "gmv": expected["gmv"].sum(1)}


class Replayer:
  """Serves batches of requests through the funnel and scores them with the oracle."""

  def __init__(self, world, models: funnel_lib.FunnelModels, funnel: funnel_lib.Funnel,
               config: ReplayConfig, day: int):
    self.world, self.models, self.funnel, self.config = world, models, funnel, config
    self.best_page: Optional[Union[best_page_lib.OracleBestPage,
                                   best_page_lib.CachedBestPage]] = None
    if not world.has_oracle:  # real logs: the funnel and the cascade only
      return
    self.best_page = best_page_lib.OracleBestPage(world, day, funnel.page, config.rank_by,
                                                  config.oracle_block_pairs)
    if config.oracle_cache_dir:
      self.best_page = best_page_lib.CachedBestPage(self.best_page, config.oracle_cache_dir)

  def run_batch(self, request_ids, queries, in_sample) -> Tuple[pa.Table, Dict[str, float]]:
    """Per-request results of one batch (request_table's columns), and its seconds per step."""
    clock = _Clock()
    funnel, models, rank_by = self.funnel, self.models, self.config.rank_by
    retrieved = clock.time("retrieval", funnel_lib.retrieve, models.retrieval, queries,
                           funnel.retrieval)
    coarse_scores, kept = clock.time("coarse", funnel_lib.coarse_rank, models.coarse, queries,
                                     retrieved, funnel.coarse)
    page = clock.time("fine", funnel_lib.fine_rank, self.world, models, request_ids, kept,
                      funnel.page, rank_by)
    cascade = clock.time("cascade", self._cascade, request_ids, coarse_scores, retrieved, kept,
                         in_sample)
    columns = {"request_id": request_ids, "user_id": queries["user_id"].astype(np.int64)}
    lists = {"page_item_ids": page, "coarse_item_ids": kept}
    if self.best_page is None:  # no oracle: its columns are NaN (null), never zeros
      columns.update({c: np.full(len(request_ids), np.nan)
                      for c in request_table.ORACLE_ONLY_COLUMNS})
    else:
      oracle_page = clock.time("oracle", self.best_page.top, request_ids)
      outcomes = clock.time("oracle", page_outcomes, self.world.oracle, request_ids, page)
      best = clock.time("oracle", page_outcomes, self.world.oracle, request_ids, oracle_page)
      columns.update({f"exp_{name}": outcomes[name] for name in request_table.OUTCOMES})
      columns.update({f"oracle_{name}": best[name] for name in request_table.OUTCOMES})
      columns.update(request_table.stage_survival(oracle_page, retrieved, kept, page))
      lists["oracle_item_ids"] = oracle_page
    columns.update(cascade)
    if self.config.store_retrieved:
      lists["retrieved_item_ids"] = retrieved
    return request_table.build_table(columns, lists), clock.seconds

  def _cascade(self, request_ids, coarse_scores, retrieved, kept, in_sample):
    """Coarse->fine recall and Kendall tau for the sampled requests (nan for the others),
    against the fine ranking score and against the fine CTR score.

    Fine scores the N1 candidates of a few requests at a time: every candidate row repeats
    the request's behaviour sequence, so this bounds memory to ~CASCADE_ROWS rows."""
    out = {name: np.full(len(request_ids), np.nan) for name in request_table.CASCADE_COLUMNS}
    sampled = np.flatnonzero(in_sample)
    step = max(1, CASCADE_ROWS // retrieved.shape[1])
    for start in range(0, len(sampled), step):
      rows = sampled[start:start + step]
      fine_scores = funnel_lib.fine_scores(self.world, self.models, request_ids[rows],
                                           retrieved[rows], self.config.rank_by)
      agreement = request_table.cascade_agreement(coarse_scores[rows], fine_scores,
                                                  retrieved[rows], kept[rows], self.funnel.page)
      for name, values in agreement.items():
        out[name][rows] = values
    return out


class _Clock:
  """Accumulates wall-clock seconds per named step."""

  def __init__(self):
    self.seconds: Dict[str, float] = {}

  def time(self, name: str, fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------
# The replay
# ---------------------------------------------------------------------------------------------


def resolve_day(world, day: Optional[int]) -> int:
  return world.eval_day(day, "--day")


def replay_key(config: ReplayConfig, funnel: funnel_lib.Funnel, day: int, world,
               models: funnel_lib.FunnelModels) -> Dict[str, Any]:
  """Everything a replay's per-request results depend on (a resumed run must match it)."""
  key = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_RESULTS}
  if key["index"] == ann.BRUTE_FORCE:  # the keys of exact replays predate --index
    del key["index"]
  key.update(day=day, funnel=funnel.spec(), world_hash=world.world_hash,
             models=models.fingerprint)
  return key


def build_summary(config: ReplayConfig, funnel: funnel_lib.Funnel, day: int, world,
                  models: funnel_lib.FunnelModels, frame: pd.DataFrame, seconds,
                  offline: pd.DataFrame, key) -> dict:
  """summary.json, the contract experiments.compare reads: every figure, and under
  `unavailable` the reason of each one that is null."""
  metrics: Dict[str, Optional[float]] = dict(request_table.summary_metrics(frame))
  metrics.update(offline_table.summary_metrics(offline))
  metrics.update(run_dir_lib.speed_metrics(seconds, len(frame)))
  metrics["n_requests"] = int(len(frame))
  unavailable = {} if world.has_oracle else request_table.unavailable_without_oracle(metrics)
  if models.fine_cvr is None:
    for name in ("offline/fine_cvr_auc", "offline/fine_cvr_gauc", "offline/fine_cvr_eauc"):
      unavailable[name] = f"no fine CVR model in this funnel (--cvr_variant={funnel_lib.NO_CVR})"
  unavailable.update(request_table.cascade_null_reasons(frame, config.rank_by))
  unavailable.update(offline_table.null_reasons(offline, bool(world.has_oracle)))
  for name in unavailable:
    metrics[name] = None  # null with its reason, never a number that means nothing
  flag_values = dataclasses.asdict(config)
  flag_values.update(day=day, funnel=funnel.spec(), label=config.run_label())
  return {"format": run_dir_lib.SUMMARY_FORMAT, "label": config.run_label(),
          "seed": int(config.seed), "day": int(day), "world_hash": world.world_hash,
          "config": flag_values, "models": models.facts, "metrics": metrics,
          "per_request_file": run_dir_lib.PER_REQUEST, "replay_key": run_dir_lib.key_digest(key),
          "has_oracle": bool(world.has_oracle), "unavailable": unavailable}


def replay(world, funnel: funnel_lib.Funnel, config: ReplayConfig,
           engine: Optional[engine_lib.Engine] = None) -> dict:
  """Replays a day through the funnel; writes the run dir and returns summary.json's content.

  `engine` serves the chunks (default: in this process); whoever serves them, this process
  gathers them and writes the results, so the summary is the same but for the timings.

  Raises UserError (one-line message) for models of another world, a replayed day the models
  trained on, or a run dir holding another configuration; a missing model's error (from
  stages.serving) names the command that trains it.
  """
  replay_defaults.check(config, world)
  day = resolve_day(world, config.day)
  models = funnel_lib.load_models(config.model_dir, config.variants(), world, day,
                                  config.index)
  funnel_lib.check_funnel(funnel, world, models)
  key = replay_key(config, funnel, day, world, models)
  requests = select_requests(world, day, config)
  run_dir = run_dir_lib.RunDir(config.run_dir)
  finished = run_dir.start(key, config.overwrite)
  if finished is not None:
    logging.info("%s already holds this finished replay; nothing to do", config.run_dir)
    return finished
  with run_dir.abandoned_on_error():  # failed before its first chunk: nothing left behind
    replayer = Replayer(world, models, funnel, config, day)
    if engine is None or engine.is_local:
      n_chunks = run_chunks(replayer, requests, run_dir, config)
    else:
      n_chunks = fan_out_chunks(engine, replayer, run_dir,
                                chunk_count(len(requests.request_ids), config), funnel, config,
                                day)
  if replayer.best_page is not None:
    replayer.best_page.save()
  table, seconds = run_dir.read_chunks(n_chunks)
  frame = table.to_pandas()
  offline = funnel_lib.offline_scores(world, models, day)
  summary = build_summary(config, funnel, day, world, models, frame, seconds, offline, key)
  run_dir.finish(table, summary, offline)
  return files.read_json(os.path.join(config.run_dir, run_dir_lib.SUMMARY))


def chunk_count(n_requests: int, config: ReplayConfig) -> int:
  return -(-n_requests // max(1, config.batch_requests))


def run_chunks(replayer: Replayer, requests: DayRequests, run_dir: run_dir_lib.RunDir,
               config: ReplayConfig, indices: Optional[Sequence[int]] = None) -> int:
  """Serves every batch not yet on disk (of `indices`, default all), writing each as a chunk;
  returns the chunk count."""
  n = len(requests.request_ids)
  size = max(1, config.batch_requests)
  n_chunks = chunk_count(n, config)
  started, done = time.perf_counter(), 0
  line = progress.Line("replay", log_every=max(1, config.log_every_batches))
  for index in (range(n_chunks) if indices is None else indices):
    if run_dir.chunk_done(index):
      continue
    batch_start = time.perf_counter()
    table, seconds = replayer.run_batch(*requests.batch(index * size, (index + 1) * size))
    seconds["total"] = time.perf_counter() - batch_start
    seconds["n"] = table.num_rows
    run_dir.write_chunk(index, table, seconds)
    done += table.num_rows
    line.update("batch %d/%d, %d/%d requests, %.1f requests/s", index + 1, n_chunks,
                min((index + 1) * size, n), n, done / (time.perf_counter() - started))
  if done:
    line.done("%d requests served, %.1f requests/s", done,
              done / (time.perf_counter() - started))
  return n_chunks


def fan_out_chunks(engine: engine_lib.Engine, replayer: Replayer, run_dir: run_dir_lib.RunDir,
                   n_chunks: int, funnel: funnel_lib.Funnel, config: ReplayConfig, day: int) -> int:
  """Serves the chunks not yet on disk as `engine` tasks, one contiguous range per worker
  (each loads the world and the models once); returns the chunk count. New oracle pages the
  workers computed go to the driver's cache (`replayer.best_page`), saved once."""
  missing = [i for i in range(n_chunks) if not run_dir.chunk_done(i)]
  ranges = [list(part) for part in np.array_split(missing, min(engine.parallelism(),
                                                               len(missing)) or 1) if len(part)]
  pages = engine.map(serve_chunks, ranges, common=(replayer.world.world_dir, funnel, config, day),
                     label=lambda r: f"replay chunks {r[0]}-{r[-1]} of {config.run_dir}")
  if isinstance(replayer.best_page, best_page_lib.CachedBestPage):
    for new in pages:
      replayer.best_page.add(*new)
  return n_chunks


def serve_chunks(world_dir: str, funnel: funnel_lib.Funnel, config: ReplayConfig, day: int,
                 indices: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
  """One worker's part of a replay: loads the world and the models, serves the chunks
  `indices` into the run dir; returns the oracle pages it computed that were not cached."""
  world = data.open_world(world_dir)
  models = funnel_lib.load_models(config.model_dir, config.variants(), world, day,
                                  config.index)
  replayer = Replayer(world, models, funnel, config, day)
  run_chunks(replayer, select_requests(world, day, config), run_dir_lib.RunDir(config.run_dir),
             config, [int(i) for i in indices])
  if isinstance(replayer.best_page, best_page_lib.CachedBestPage):
    return replayer.best_page.new_pages()
  return np.zeros(0, np.int64), np.zeros((0, funnel.page), np.int64)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

TABLE_ROWS = ("online/exp_gmv_per_1k", "online/exp_clicks_per_1k", "online/exp_conversions_per_1k",
              "offline/coarse_auc", "offline/coarse_eauc", "offline/fine_ctr_auc",
              "offline/fine_ctr_eauc", "offline/fine_cvr_auc", "offline/fine_cvr_eauc",
              "survival/retrieval", "survival/coarse", "survival/fine",
              "online/share_of_oracle_gmv", "online/share_of_oracle_clicks",
              "online/share_of_oracle_conversions", "cascade/coarse_fine_ctr_recall",
              "cascade/kendall_tau_ctr", "cascade/coarse_fine_recall", "cascade/kendall_tau",
              "latency/retrieval_ms", "latency/coarse_ms", "latency/fine_ms",
              "throughput/requests_per_second", "throughput/funnel_requests_per_second",
              "n_requests", "cascade/n_requests")


def format_table(summary: dict) -> str:
  """The main online and funnel figures, one per line."""
  metrics = summary["metrics"]
  lines = [f"replay {summary['label']} (day {summary['day']}, seed {summary['seed']})"]
  if not summary.get("has_oracle", True):
    lines.append("  real logs, no oracle: offline metrics only; online/ and survival/ figures "
                 "are unavailable (null in summary.json)")
  unavailable = summary.get("unavailable", {})
  for name in TABLE_ROWS:
    value = metrics.get(name)
    if name in unavailable:
      shown = "n/a"
    else:
      shown = "-" if value is None else (f"{value:.4g}" if isinstance(value, float)
                                         else f"{value:,}")
    lines.append(f"  {name:<42} {shown:>12}")
  by_reason: Dict[str, list] = {}
  for name in TABLE_ROWS:
    if name in unavailable:
      by_reason.setdefault(unavailable[name], []).append(name)
  lines += [f"  n/a ({', '.join(names)}): {reason}" for reason, names in by_reason.items()]
  return "\n".join(lines)


def define_flags() -> None:
  """The command's flags: one per ReplayConfig and EngineConfig field, plus --funnel (the
  benchmark reuses them)."""
  command.define_config_flags(ReplayConfig)
  command.define_config_flags(engine_lib.EngineConfig)
  if "eval_day" not in flags.FLAGS:  # the stages' name for the same day
    flags.DEFINE_alias("eval_day", "day")
  if "funnel" not in flags.FLAGS:
    flags.DEFINE_string("funnel", DEFAULT_FUNNEL, "Items kept by each stage: "
                        "retrieval:N1,coarse:N2,fine:K (K = page size).")


def config_from_flags(need_run_dir: bool = True) -> ReplayConfig:
  """The replay's configuration from its flags (benchmarks reuse them without --run_dir)."""
  for name in ("world_dir", "model_dir") + (("run_dir",) if need_run_dir else ()):
    if not flags.FLAGS[name].value:
      raise UserError(f"--{name} is required")
  # `or 0`: while stages/ still defines a shared --seed (default None) at import, it wins.
  return command.config_from_flags(ReplayConfig, run_dir=flags.FLAGS.run_dir or "",
                                   seed=int(flags.FLAGS.seed or 0))


def main() -> None:
  config = config_from_flags()
  funnel = funnel_lib.parse_funnel(flags.FLAGS.funnel)
  world = data.open_world(config.world_dir)
  given = [name for name in ("coarse_variant", "cvr_variant", "ctr_variant", "rank_by",
                             "funnel") if flags.FLAGS[name].present]
  config, funnel, notes = replay_defaults.resolve(world, config, funnel, given)
  for note in notes:
    print(f"replay default: {note}")
  with engine_lib.Engine(command.config_from_flags(engine_lib.EngineConfig)) as engine:
    summary = replay(world, funnel, config, engine)
  print(format_table(summary))
  print(f"run dir: {config.run_dir}")


def run() -> None:
  """Console-script entry point (pfd-replay)."""
  define_flags()
  command.start(command.run_command(main, "experiments.replay"))


if __name__ == "__main__":
  run()
