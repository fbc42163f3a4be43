r"""Issue 19's memory targets, measured: peak RSS of each stage command against its target.

    python -m benchmarks.memory_table --small_world=/tmp/worlds/small \
        --medium_world=/tmp/worlds/medium --model_dir=/tmp/mem_table
    python -m benchmarks.memory_table --small_world=W --medium_world= --model_dir=M \
        --code_dir=/path/to/another/checkout     # the same runs on other code (a before/after)

Runs, one at a time, each stage command as a fresh child process (`nice`d by --nice) with
--noreuse into its own model directory under --model_dir: on the small world retrieval
(first: the coarse stage may read its export), coarse pfd, fine CTR and fine CVR (target
1.5 GB each), and on the medium world fine CTR (target 4 GB; --medium_args, by default
--max_steps=300: the peak is set by the days' columns and evaluation, not by the number of
steps). The child's code is --code_dir's (run from there with PYTHONPATH=--code_dir; default:
this checkout). A figure is that child's own peak resident set (os.wait4's ru_maxrss, what
`/usr/bin/time -v` prints as "Maximum resident set size"). Prints one row per run: stage,
world, peak GB (10^9 bytes), target, met/missed, wall seconds, the headline metric from its
metrics.json (so that two checkouts' runs can be compared), and the load average at its
start. Figures, not assertions. Each child's output goes to --model_dir/<name>.log.
"""

import dataclasses
import json
import os
import sys
from typing import List, Optional, Tuple

from absl import app
from absl import flags

from benchmarks import memory

FLAGS = flags.FLAGS
SMALL_TARGET_GB, MEDIUM_TARGET_GB = 1.5, 4.0


@dataclasses.dataclass(frozen=True)
class Run:
  """One stage command: its module and flags, the world it reads, its target, and where its
  metrics land (relative to its model directory) with the metric to show."""
  name: str
  module: str
  args: Tuple[str, ...]
  world: str
  target_gb: float
  metrics: str
  metric: str


def define_flags() -> None:
  flags.DEFINE_string("small_world", None, "A small-preset world.", required=True)
  flags.DEFINE_string("medium_world", "", "A medium-preset world ('' skips its run).")
  flags.DEFINE_string("model_dir", None, "Scratch directory for the runs' models and logs "
                      "(written; each run's own subdirectory is emptied first).", required=True)
  flags.DEFINE_string("code_dir", "", "Checkout whose code the children run (default: this "
                      "one).")
  flags.DEFINE_list("medium_args", ["--max_steps=300"], "Extra flags of the medium run.")
  flags.DEFINE_list("only", [], "Run only these rows (names as printed), e.g. small_fine_ctr.")
  flags.DEFINE_integer("nice", 10, "Niceness of the children.")


def runs(small: str, medium: str, medium_args: List[str]) -> List[Run]:
  small_runs = [
      Run("small_retrieval", "stages.retrieval", (), small, SMALL_TARGET_GB,
          "retrieval/baseline", "recall@100"),
      Run("small_coarse_pfd", "stages.coarse", ("--variant=pfd",), small, SMALL_TARGET_GB,
          "coarse/pfd", "auc"),
      Run("small_fine_ctr", "stages.fine", ("--task=ctr",), small, SMALL_TARGET_GB,
          "fine/ctr/baseline", "auc"),
      Run("small_fine_cvr", "stages.fine", ("--task=cvr",), small, SMALL_TARGET_GB,
          "fine/cvr/baseline", "auc"),
  ]
  if not medium:
    return small_runs
  return small_runs + [Run("medium_fine_ctr", "stages.fine", ("--task=ctr", *medium_args),
                           medium, MEDIUM_TARGET_GB, "fine/ctr/baseline", "auc")]


def _metric(path: str, name: str) -> Optional[float]:
  try:
    with open(path) as f:
      return json.load(f).get(name)
  except (OSError, ValueError):
    return None


def main(argv) -> None:
  del argv
  code_dir = os.path.abspath(FLAGS.code_dir or os.path.dirname(os.path.dirname(__file__)))
  env = {**os.environ, "PYTHONPATH": code_dir}
  chosen = [r for r in runs(FLAGS.small_world, FLAGS.medium_world, FLAGS.medium_args)
            if not FLAGS.only or r.name in FLAGS.only]
  small_models = os.path.join(FLAGS.model_dir, "small")
  print(f"code: {code_dir}; {os.cpu_count()} cores; niceness {FLAGS.nice}")
  print(f"{'run':18s} {'world':24s} {'peak GB':>8s} {'target':>7s} {'':6s} {'wall s':>7s} "
        f"{'metric':>22s} {'load':>5s}")
  for run in chosen:
    # The small world's runs share one model dir (coarse may read retrieval's export).
    model_dir = small_models if run.world == FLAGS.small_world else os.path.join(
        FLAGS.model_dir, run.name)
    os.makedirs(model_dir, exist_ok=True)
    command = ["nice", "-n", str(FLAGS.nice), sys.executable, "-m", run.module,
               f"--world_dir={run.world}", f"--model_dir={model_dir}", "--noreuse", *run.args]
    load = os.getloadavg()[0]
    with open(os.path.join(FLAGS.model_dir, f"{run.name}.log"), "w") as log:
      code, seconds, rss = memory.peak_rss(command, cwd=code_dir, env=env, output=log)
    gb = rss / 1e9
    verdict = "failed" if code else ("met" if gb <= run.target_gb else "missed")
    value = _metric(os.path.join(model_dir, run.metrics, "metrics.json"), run.metric)
    shown = f"{run.metric}={value:.6f}" if isinstance(value, float) else "-"
    print(f"{run.name:18s} {os.path.basename(run.world.rstrip('/')):24s} {gb:8.2f} "
          f"{run.target_gb:7.1f} {verdict:6s} {seconds:7.0f} {shown:>22s} {load:5.1f}",
          flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
