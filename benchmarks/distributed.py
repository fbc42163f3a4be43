"""Training examples/s of one process against local multi-worker (and parameter-server) clusters.

    python -m benchmarks.distributed --world_dir=/tmp/worlds/small --max_steps=60

Runs the same stage command (default: fine CTR baseline, no validation stopping) as one
process (`--strategy=default`), then under `--strategy=multi_worker` with each of
--worker_counts local workers (`experiments.cluster`), and with --ps > 0 also under
`--strategy=parameter_server` (a chief, --ps_workers workers, --ps ps tasks). Each run is a
fresh model dir; it prints metrics.json's examples_per_second (global batches over the steps
after the first), the wall time of the whole command and the load average. All tasks share
this machine's cores: on 2 cores expect no speed-up; the figures show the path works and what
the collectives and the coordination cost.
"""

import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

from absl import app
from absl import flags

from data.plumbing import files
from experiments import cluster

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("world_dir", None, "World to train on (e.g. the small preset).",
                      required=True)
  flags.DEFINE_string("model_dir", None, "Scratch root for the runs' model dirs (written). "
                      "Default: a temp dir.")
  flags.DEFINE_string("stage", "stages.fine", "Stage command module.")
  flags.DEFINE_list("args", ["--task=ctr"], "Extra flags of the stage command.")
  flags.DEFINE_integer("max_steps", 60, "Training steps per run.")
  flags.DEFINE_integer("batch_size", 1024, "Global batch size.")
  flags.DEFINE_list("worker_counts", ["1", "2"], "Local multi-worker cluster sizes to run.")
  flags.DEFINE_integer("ps", 0, "With > 0: also a parameter-server run with this many ps tasks.")
  flags.DEFINE_integer("ps_workers", 2, "Workers of the parameter-server run.")
  flags.DEFINE_integer("timeout", 3600, "Seconds after which a run is stopped.")


def _command(strategy: str, model_dir: str) -> List[str]:
  """The stage command, without validation stopping (parameter servers refuse it, and its
  checks would be in the timed steps) or interval backups."""
  return [sys.executable, "-m", FLAGS.stage, f"--world_dir={FLAGS.world_dir}",
          f"--model_dir={model_dir}", f"--strategy={strategy}", "--validation_fraction=0",
          f"--max_steps={FLAGS.max_steps}", f"--batch_size={FLAGS.batch_size}",
          "--checkpoint_every=100000", *FLAGS.args]


def _metrics(model_dir: str) -> Dict[str, Any]:
  found = [os.path.join(root, "metrics.json") for root, _, names in os.walk(model_dir)
           if "metrics.json" in names]
  return files.read_json(found[0]) if found else {}


def _report(name: str, seconds: float, load: float, metrics: Dict[str, Any]) -> None:
  rate = metrics.get("examples_per_second", 0.0)
  print(f"{name:34s} {rate:10,.0f} examples/s   {metrics.get('timed_steps', 0):4d} timed "
        f"steps   command {seconds:6.1f} s   load {load:4.1f}   auc {metrics.get('auc', 0):.4f}",
        flush=True)


def main(argv) -> None:
  del argv
  root = FLAGS.model_dir or tempfile.mkdtemp(prefix="pfd-bench-distributed-")
  print(f"{FLAGS.stage} {' '.join(FLAGS.args)} on {FLAGS.world_dir}: {FLAGS.max_steps} steps of "
        f"{FLAGS.batch_size} (global), {os.cpu_count()} CPUs; model dirs under {root}",
        flush=True)
  model_dir = os.path.join(root, "default")
  load, started = os.getloadavg()[0], time.perf_counter()
  subprocess.run(_command("default", model_dir), stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, timeout=FLAGS.timeout, check=True)
  _report("default (1 process)", time.perf_counter() - started, load, _metrics(model_dir))
  for count in (int(c) for c in FLAGS.worker_counts):
    model_dir = os.path.join(root, f"multi_worker{count}")
    load = os.getloadavg()[0]
    run = cluster.launch(_command("multi_worker", model_dir), workers=count,
                         timeout=FLAGS.timeout, log_dir=os.path.join(model_dir, "logs"))
    if not run.ok:
      raise SystemExit(cluster.describe_failure(run))
    _report(f"multi_worker, {count} worker(s)", run.seconds, load, _metrics(model_dir))
  if FLAGS.ps:
    model_dir = os.path.join(root, "parameter_server")
    load = os.getloadavg()[0]
    run = cluster.launch(_command("parameter_server", model_dir), workers=FLAGS.ps_workers,
                         ps=FLAGS.ps, timeout=FLAGS.timeout,
                         log_dir=os.path.join(model_dir, "logs"))
    if not run.ok:
      raise SystemExit(cluster.describe_failure(run))
    _report(f"parameter_server, {FLAGS.ps_workers} workers + {FLAGS.ps} ps", run.seconds, load,
            _metrics(model_dir))


if __name__ == "__main__":
  define_flags()
  app.run(main)
