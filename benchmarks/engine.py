r"""Benchmark of data.generate on the local runner against Ray (prints figures, no asserts).

  python -m benchmarks.engine --preset=small --n_user_shards=2 [--repeats=3] [--ray_num_cpus=0]

Generates the same world into temporary directories, alternately in this process
(--runner=local: the shards one after another) and with each shard a Ray task on a local Ray
instance (--runner=ray), and prints the wall-clock seconds of each repeat, their median, the
time Ray took to start (paid once per command, not counted in the Ray figures), and whether
both worlds have the same world_hash. Every other data.generate flag sets the world.
"""

import shutil
import statistics
import tempfile
import time
from typing import Dict, List

from absl import app
from absl import flags

from data import generate
from data.plumbing import engine as engine_lib

FLAGS = flags.FLAGS


def _generate_seconds(config, engine) -> tuple:
  """(seconds, world_hash) of one generation into a fresh temporary directory."""
  world_dir = tempfile.mkdtemp(prefix="pfd-engine-")
  try:
    start = time.perf_counter()
    manifest = generate.generate(world_dir + "/world", config, engine=engine)
    if manifest is None:
      raise RuntimeError("generate wrote no manifest")
    return time.perf_counter() - start, manifest["world_hash"]
  finally:
    shutil.rmtree(world_dir, ignore_errors=True)


def main(argv):
  del argv
  config = generate.config_from_flags()
  local = engine_lib.Engine()
  start = time.perf_counter()
  with engine_lib.Engine(engine_lib.EngineConfig(runner=engine_lib.RAY,
                                                 ray_num_cpus=FLAGS.ray_num_cpus)) as ray:
    ray_start = time.perf_counter() - start
    seconds: Dict[str, List[float]] = {"local": [], "ray": []}
    hashes = set()
    for _ in range(FLAGS.repeats):
      for name, engine in (("local", local), ("ray", ray)):
        elapsed, world_hash = _generate_seconds(config, engine)
        seconds[name].append(elapsed)
        hashes.add(world_hash)
    cpus = ray.parallelism()
  print(f"preset={FLAGS.preset} users={config.n_users} days={config.n_days} "
        f"shards={config.n_user_shards}; Ray CPUs {cpus}; Ray start {ray_start:.1f} s")
  for name, values in seconds.items():
    runs = " ".join(f"{v:.2f}" for v in values)
    print(f"generate --runner={name:<5}  median {statistics.median(values):6.2f} s  ({runs})")
  ratio = statistics.median(seconds["ray"]) / statistics.median(seconds["local"])
  print(f"ray / local: {ratio:.2f}x; same world_hash: {len(hashes) == 1}")


def run() -> None:
  generate.define_flags()
  flags.DEFINE_integer("repeats", 3, "Generations per runner (alternating).")
  flags.DEFINE_integer("ray_num_cpus", 0, "Cores of the local Ray instance (0: every core).")
  app.run(main)


if __name__ == "__main__":
  run()
