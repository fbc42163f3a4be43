r"""Benchmark of the replay: funnel throughput, oracle and cascade cost, whole-corpus scoring.

  python -m benchmarks.replay --world_dir=/tmp/worlds/small --model_dir=/tmp/msmall --day=8 \
      [--funnel=retrieval:1000,coarse:100,fine:10] [--requests=2048] [--batch_requests=256] \
      [--cascade_requests=64] [--corpus_requests=4] [--full_replay]

Prints figures, asserts nothing. Takes the replay's own flags (models, variants, funnel,
rank_by, batch size). Every figure is wall-clock after one warm-up batch, with the process's
CPU time next to it: on a shared machine the CPU time says what the work costs, the wall
time what this run got.
  * funnel: retrieval -> coarse -> fine over --requests requests, ms per request per stage
    and requests per second (the serving path alone: what the 500 requests/s target is about);
  * oracle: the exact best page over the corpus plus the outcomes of both pages;
  * cascade: fine scoring of the N1 candidates and Kendall tau, per sampled request;
  * corpus: the fine models over every item of the corpus (no funnel) for a few requests;
  * with --full_replay: `experiments.replay.replay` end to end into a temporary run dir.
"""

import os
import resource
import shutil
import tempfile
import time
from typing import Callable, Dict

from absl import app
from absl import flags
import numpy as np

import data
from data.stats import metrics as metrics_lib
from data.world import best_page as best_page_lib
from experiments import funnel as funnel_lib
from experiments import replay as replay_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The replay's flags, plus the benchmark's own."""
  replay_lib.define_flags()
  flags.DEFINE_integer("requests", 2048, "Requests timed through the funnel.")
  flags.DEFINE_integer("cascade_requests", 64, "Requests timed for the cascade figures.")
  flags.DEFINE_integer("corpus_requests", 4, "Requests scored against the whole corpus.")
  flags.DEFINE_integer("corpus_chunk", 10_000, "Items per fine-model call when scoring the "
                       "corpus.")
  flags.DEFINE_bool("full_replay", False, "Also time replay() end to end on --requests "
                    "requests (cascade on --cascade_requests of them).")


class Stopwatch:
  """Wall and CPU seconds per named step."""

  def __init__(self):
    self.wall: Dict[str, float] = {}
    self.cpu: Dict[str, float] = {}

  def time(self, name: str, fn: Callable, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
    self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu
    return out

  def line(self, name: str, n: int) -> str:
    wall, cpu = self.wall[name] / n * 1e3, self.cpu[name] / n * 1e3
    return f"  {name:<28s} {wall:8.3f} ms/request wall  {cpu:8.3f} ms/request CPU"


def _timed(label: str, fn: Callable):
  start = time.perf_counter()
  out = fn()
  print(f"{label:<40s} {time.perf_counter() - start:7.2f} s")
  return out


def funnel_batches(world, models, requests, funnel, config, watch: Stopwatch, best_page=None):
  """Serves every batch of `requests` through the funnel (and the oracle if `best_page`)."""
  size = config.batch_requests
  for start in range(0, len(requests.request_ids), size):
    ids, queries, _ = requests.batch(start, start + size)
    retrieved = watch.time("retrieval", funnel_lib.retrieve, models.retrieval, queries,
                           funnel.retrieval)
    _, kept = watch.time("coarse", funnel_lib.coarse_rank, models.coarse, queries, retrieved,
                         funnel.coarse)
    page = watch.time("fine", funnel_lib.fine_rank, world, models, ids, kept, funnel.page,
                      config.rank_by)
    if best_page is not None:
      best = watch.time("oracle best page", best_page.top, ids)
      watch.time("oracle outcomes", replay_lib.page_outcomes, world.oracle, ids, page)
      watch.time("oracle outcomes", replay_lib.page_outcomes, world.oracle, ids, best)


def report_funnel(world, models, requests, funnel, config) -> None:
  warm = replay_lib.DayRequests(requests.request_ids[:config.batch_requests],
                                {k: v[:config.batch_requests] for k, v in requests.queries.items()},
                                requests.in_cascade_sample[:config.batch_requests])
  funnel_batches(world, models, warm, funnel, config, Stopwatch())
  watch = Stopwatch()
  funnel_batches(world, models, requests, funnel, config, watch)
  n = len(requests.request_ids)
  wall = sum(watch.wall.values())
  cpu = sum(watch.cpu.values())
  print(f"funnel {funnel.spec()}, rank_by={config.rank_by}, {n} requests in batches of "
        f"{config.batch_requests}:")
  for name in ("retrieval", "coarse", "fine"):
    print(watch.line(name, n))
  print(f"  => {n / wall:,.0f} requests/s wall ({cpu / wall:.2f} CPU cores used; "
        f"{n / cpu:,.0f} requests per CPU-second)")


def report_oracle(world, models, requests, funnel, config, day: int) -> None:
  best_page = _timed("oracle best-page setup", lambda: best_page_lib.OracleBestPage(
      world, day, funnel.page, config.rank_by, config.oracle_block_pairs))
  watch = Stopwatch()
  funnel_batches(world, models, requests, funnel, config, watch, best_page)
  n = len(requests.request_ids)
  print(f"oracle over the {len(world.items):,}-item corpus:")
  for name in ("oracle best page", "oracle outcomes"):
    print(watch.line(name, n))


def report_cascade(world, models, requests, funnel, config) -> None:
  n = min(FLAGS.cascade_requests, len(requests.request_ids))
  ids, queries, _ = requests.batch(0, n)
  watch = Stopwatch()
  retrieved = funnel_lib.retrieve(models.retrieval, queries, funnel.retrieval)
  coarse_scores, _ = funnel_lib.coarse_rank(models.coarse, queries, retrieved, funnel.coarse)
  fine_scores = watch.time("fine scores of the N1", funnel_lib.fine_objective, world, models,
                           ids, retrieved, config.rank_by)
  watch.time("kendall tau (metrics)", metrics_lib.kendall_tau, coarse_scores, fine_scores)
  print(f"cascade figures, {n} requests x {funnel.retrieval} candidates:")
  for name in ("fine scores of the N1", "kendall tau (metrics)"):
    print(watch.line(name, n))


def report_corpus(world, models, requests, config) -> None:
  n = min(FLAGS.corpus_requests, len(requests.request_ids))
  ids = requests.request_ids[:n]
  n_items = len(world.items)
  watch = Stopwatch()
  for start in range(0, n_items, FLAGS.corpus_chunk):
    items = np.broadcast_to(np.arange(start, min(start + FLAGS.corpus_chunk, n_items)),
                            (n, min(FLAGS.corpus_chunk, n_items - start)))
    watch.time("fine over the corpus", funnel_lib.fine_objective, world, models, ids,
               np.ascontiguousarray(items), config.rank_by)
  wall = watch.wall["fine over the corpus"]
  print(f"fine models over all {n_items:,} items (no funnel), {n} requests:")
  print(watch.line("fine over the corpus", n))
  print(f"  => {n / wall:.2f} requests/s wall")


def report_full_replay(world, funnel, config) -> None:
  run_dir = tempfile.mkdtemp(prefix="pfd-replay-bench-")
  try:
    config.run_dir, config.max_requests = run_dir, FLAGS.requests
    config.cascade_sample = FLAGS.cascade_requests
    summary = _timed("replay() end to end", lambda: replay_lib.replay(world, funnel, config))
    metrics = summary["metrics"]
    print(f"  throughput/requests_per_second {metrics['throughput/requests_per_second']:.1f}, "
          f"funnel {metrics['throughput/funnel_requests_per_second']:.1f}; latency ms: " +
          ", ".join(f"{name} {metrics[f'latency/{name}_ms']:.2f}"
                    for name in ("retrieval", "coarse", "fine", "oracle", "cascade")))
  finally:
    shutil.rmtree(run_dir, ignore_errors=True)


def main(argv):
  del argv
  config = replay_lib.config_from_flags(need_run_dir=False)
  funnel = funnel_lib.parse_funnel(FLAGS.funnel)
  world = _timed("load world", lambda: data.load(config.world_dir, verify="size"))
  day = replay_lib.resolve_day(world, config.day)
  config.day, config.max_requests = day, FLAGS.requests
  models = _timed("load models", lambda: funnel_lib.load_models(
      config.model_dir, config.variants(), world, day))
  _timed("feature service", lambda: world.features)
  _timed("oracle", lambda: world.oracle)
  requests = replay_lib.select_requests(world, day, config)
  print(f"world {config.world_dir}: {len(world.items):,} items, day {day}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
  report_funnel(world, models, requests, funnel, config)
  report_oracle(world, models, requests, funnel, config, day)
  report_cascade(world, models, requests, funnel, config)
  report_corpus(world, models, requests, config)
  if FLAGS.full_replay:
    report_full_replay(world, funnel, config)
  print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GB")


if __name__ == "__main__":
  define_flags()
  app.run(main)
