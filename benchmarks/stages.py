"""Per-stage training throughput and serving latency on a world (default: the small preset).

    python -m benchmarks.stages --world_dir=/tmp/worlds/small --model_dir=/tmp/bench_models

For each stage (retrieval, fine CTR, fine CVR baseline and pfd, coarse baseline and pfd_md) it
trains for --bench_steps steps through the stage command's own code path and prints training
examples per second; then it loads each export the way the replay does and prints serving
latency per 1,000 candidates (the median of --repeats timed calls after a warm-up). Figures,
not assertions: run it on an otherwise idle machine and report what it prints.
"""

import os
import statistics
import time

from absl import app
from absl import flags
import numpy as np

import data
from experiments import demo
from stages import config as config_lib
from stages import driver
from stages import serving

FLAGS = flags.FLAGS

def training_throughput(base: config_lib.TrainConfig):
  for stage_entry, variant in demo.STAGE_RUNS:  # the demo's six runs
    config = stage_entry.make_config(base, variant=variant, max_steps=FLAGS.bench_steps)
    stage = config.output
    # The run's own throughput (stages.training): the steps after the first, tracing one.
    metrics = driver.train(stage_entry.task_class(), config)
    batch_size = config.batch_size or stage_entry.batch_size
    print(f"train  {stage:10s} {variant:9s} {metrics['examples_per_second']:12,.0f} examples/s "
          f"({metrics['timed_steps']} steps of {batch_size} in "
          f"{metrics['timed_seconds']:.1f}s)")


def _median_ms(fn, repeats: int) -> float:
  fn()  # warm-up (tracing)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000.0 * statistics.median(times)


def serving_latency(world, model_dir: str, repeats: int):
  """Latency per 1,000 candidates, each export called as the replay calls it."""
  day = world.days[-1]
  request_ids = world.request_arrays([day])["request_id"][:10]
  queries = serving.request_rows(world, [day], request_ids)
  candidates = np.random.default_rng(0).choice(len(world.items), (10, 100), replace=False)
  features = world.features.compute(request_ids, candidates)
  index = serving.load_retrieval(model_dir)
  one_query = {k: v[:1] for k, v in queries.items()}
  ms = _median_ms(lambda: index.top_items(one_query, k=min(1000, index.k)), repeats)
  print(f"serve  retrieval  top-{min(1000, index.k)} of {len(world.items):,} items: "
        f"{ms:8.2f} ms per request")
  for variant in ("baseline", "pfd_md"):
    scorer = serving.load_coarse(model_dir, variant)
    ms = _median_ms(lambda: scorer.score(queries, candidates), repeats)
    print(f"serve  coarse     {variant:9s}: {ms:8.2f} ms per 1,000 candidates")
  for task, variant in (("ctr", "baseline"), ("cvr", "baseline"), ("cvr", "pfd")):
    model = serving.load_fine(model_dir, task, variant)
    ms = _median_ms(lambda: model.predict_candidates(features), repeats)
    print(f"serve  fine {task}   {variant:9s}: {ms:8.2f} ms per 1,000 candidates")


def main(argv):
  del argv
  base = config_lib.from_flags(config_lib.TrainConfig)
  world = data.load(base.world_dir, verify="size")
  print(f"world {base.world_dir}: {world.config.n_users:,} users, "
        f"{world.config.n_items:,} items; widths {list(base.hidden_units)}, "
        f"batch {base.batch_size or 'the stage default'}, {os.cpu_count()} CPUs")
  training_throughput(base)
  serving_latency(world, base.model_dir, FLAGS.repeats)


def run() -> None:
  config_lib.define_flags(config_lib.TrainConfig)
  flags.DEFINE_integer("bench_steps", 300, "Training steps per stage.")
  flags.DEFINE_integer("repeats", 7, "Timed serving calls per model.")
  app.run(main)


if __name__ == "__main__":
  run()
