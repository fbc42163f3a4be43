r"""Benchmark of world generation, loading and the FeatureService (prints figures, no asserts).

  python -m benchmarks.generate --preset=medium [--n_user_shards=...] [--world_dir=DIR]

Accepts every flag of data.generate (the config overrides); without --world_dir it generates
into a temporary directory that is deleted afterwards. Prints impressions/second, seconds and
the peak RSS (resource.getrusage) of generation, then the time to load the world, build the
FeatureService, and compute features / oracle probabilities for 1,000 requests x 1,000
candidates (the replay's load).
"""

import resource
import shutil
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

import data
from data import generate

FLAGS = flags.FLAGS


def _peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KB


def _timed(label: str, fn):
  start = time.time()
  out = fn()
  print(f"{label:<42s} {time.time() - start:8.2f} s   peak RSS {_peak_rss_gb():.2f} GB",
        flush=True)
  return out


def main(argv):
  del argv
  config = generate.config_from_flags()
  world_dir = FLAGS.world_dir or tempfile.mkdtemp(prefix="pfd-world-")
  try:
    start = time.time()
    manifest = generate.generate(world_dir, config, overwrite=FLAGS.overwrite)
    assert manifest is not None  # every shard, so the merged manifest
    seconds = time.time() - start
    impressions = sum(c["impressions"] for c in manifest["row_counts"].values())
    clicks = sum(c["clicks"] for c in manifest["row_counts"].values())
    conversions = sum(c["conversions"] for c in manifest["row_counts"].values())
    print(f"preset={FLAGS.preset} users={config.n_users} items={config.n_items} "
          f"days={config.n_days} shards={config.n_user_shards}")
    print(f"generate: {impressions} impressions in {seconds:.1f} s = "
          f"{impressions / seconds:,.0f} impressions/s; peak RSS {_peak_rss_gb():.2f} GB")
    print(f"CTR {clicks / impressions:.4f}  CVR {conversions / max(clicks, 1):.4f}")
    _serving_figures(world_dir, config)
  finally:
    if not FLAGS.world_dir:
      shutil.rmtree(world_dir, ignore_errors=True)


def _serving_figures(world_dir: str, config) -> None:
  world = _timed("load (verify sha256)", lambda: data.load(world_dir))
  _timed("load (verify='size')", lambda: data.load(world_dir, verify="size"))
  last_day = world.days[-1]
  _timed(f"log_arrays(day {last_day}) all columns", lambda: world.log_arrays(last_day))
  features = _timed("build FeatureService", lambda: world.features)
  requests = world.request_arrays(last_day, ["request_id"])["request_id"][:1000]
  rng = np.random.default_rng(0)
  items = rng.integers(0, config.n_items, (len(requests), FLAGS.candidates))
  label = f"features.compute {len(requests)} x {FLAGS.candidates}"
  _timed(label, lambda: features.compute(requests, items))
  oracle = _timed("build Oracle", lambda: world.oracle)
  _timed(f"oracle.p_click {len(requests)} x {FLAGS.candidates}",
         lambda: oracle.p_click(requests, items))
  _timed(f"oracle.p_convert {len(requests)} x {FLAGS.candidates}",
         lambda: oracle.p_convert(requests, items))


def run() -> None:
  generate.define_flags()
  flags.DEFINE_integer("candidates", 1000, "Candidates per request for the FeatureService "
                       "timing.")
  app.run(main)


if __name__ == "__main__":
  run()
