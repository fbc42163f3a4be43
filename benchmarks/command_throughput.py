r"""A stage command's whole-process CPU per example against the plain-Keras anchor, paired.

    python -m benchmarks.command_throughput --world_dir=/tmp/worlds/small
    python -m benchmarks.command_throughput --world_dir=W --stages=fine_ctr \
        --variants='default:;intra1:--intra_op_threads=1'

Each round runs, for every stage (--stages) and variant (--variants: extra flags of the
command), the stage command as a fresh child process twice: with its default flags (the
world's 7 training days on the small preset) and with --max_steps=--short_steps; and it times
the plain-Keras anchor of `benchmarks.train_throughput` (the same features, from_tensor_slices
+ batch + fit) in this process, on the CPU clock. A command's CPU seconds are the kernel's
(the waited-for child's rusage: every thread, TensorFlow's start, tracing, validation checks,
evaluation and export included) and its examples the steps it trained times its batch
(metrics.json: timed_steps + 1). Per stage it prints, as medians over the rounds:
  whole command   CPU microseconds per example of the default run;
  slope           (full - short) CPU / (full - short) examples: what one more example costs;
  fixed           the full run's CPU less slope x its examples;
  anchor          the anchor's CPU microseconds per example (steady-state fit, no start-up);
and the ratios anchor / whole command and anchor / slope, taken within each round (the rounds
are paired: load from other processes hits them alike) and then their median.
Figures, not assertions; the load average is printed at the start and the end.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

from absl import app
from absl import flags

from benchmarks import train_throughput as throughput
import data

FLAGS = flags.FLAGS
# stage name -> (command module, its flags, metrics.json under MODEL_DIR)
COMMANDS = {
    "fine_ctr": ("stages.fine", ["--task=ctr"], "fine/ctr/baseline"),
    "coarse": ("stages.coarse", [], "coarse/baseline"),
    "fine_cvr": ("stages.fine", ["--task=cvr"], "fine/cvr/baseline"),
    "retrieval": ("stages.retrieval", [], "retrieval/baseline"),
}


def define_flags() -> None:
  flags.DEFINE_string("world_dir", None, "World the commands train on (the small preset's).",
                      required=True)
  flags.DEFINE_list("stages", ["fine_ctr", "coarse", "fine_cvr"],
                    f"Stages measured, of {sorted(COMMANDS)}.")
  flags.DEFINE_string("variants", "default:", "';'-separated name:flags of the commands "
                      "compared ('default:' is the command as it is; flags ','-separated).")
  flags.DEFINE_integer("short_steps", 100, "--max_steps of the short run (the slope's base); "
                       "0: no short run (whole-command figures only).")
  flags.DEFINE_integer("repeats", 2, "Rounds.")
  flags.DEFINE_integer("anchor_steps", 100, "Timed anchor steps per round.")
  flags.DEFINE_string("work_dir", None, "Scratch model dirs (default: a temp dir).")


def _child_cpu() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def run_command(stage: str, extra: List[str], model_dir: str) -> Tuple[float, float, int]:
  """(CPU seconds, wall seconds, examples trained) of one stage command, a fresh process."""
  module, stage_flags, output = COMMANDS[stage]
  argv = [sys.executable, "-m", module, f"--world_dir={FLAGS.world_dir}",
          f"--model_dir={model_dir}", "--noreuse", *stage_flags, *extra]
  cpu, wall = _child_cpu(), time.perf_counter()
  result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  cpu, wall = _child_cpu() - cpu, time.perf_counter() - wall
  if result.returncode:
    raise RuntimeError(f"{' '.join(argv[1:])} failed:\n{result.stderr[-3000:]}")
  with open(os.path.join(model_dir, output, "metrics.json")) as f:
    metrics = json.load(f)
  return cpu, wall, (int(metrics["timed_steps"]) + 1) * int(metrics["batch_size"])


def anchor_timer():
  """CPU seconds per example of the plain-Keras anchor's fit (benchmarks.train_throughput)."""
  config = throughput.ThroughputConfig(world_dir=FLAGS.world_dir, steps=FLAGS.anchor_steps)
  world = data.load(FLAGS.world_dir, verify="size")
  columns = throughput.model_columns(world.schema, "fine_ctr", "click")
  arrays = world.log_arrays(list(config.days), columns)
  batches = throughput.cached_batches(world.schema, arrays, columns, config)
  model, dataset = throughput.plain_keras_anchor(world.schema, batches, config)
  timer = throughput.fit_timer(model, dataset, config.steps, clock=time.process_time)
  return lambda: timer() / config.batch_size


def parse_variants(text: str) -> Dict[str, List[str]]:
  variants = {}
  for item in filter(None, text.split(";")):
    name, _, extra = item.partition(":")
    variants[name.strip()] = [f for f in extra.split(",") if f]
  return variants


def main(argv) -> None:
  del argv
  unknown = [s for s in FLAGS.stages if s not in COMMANDS]
  if unknown:
    raise app.UsageError(f"--stages: unknown {unknown}; expected names from {sorted(COMMANDS)}")
  variants = parse_variants(FLAGS.variants)
  work = FLAGS.work_dir or tempfile.mkdtemp(prefix="command_throughput-")
  print(f"world {FLAGS.world_dir}; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} at the start; CPU clock")
  anchor = anchor_timer()
  runs: Dict[Tuple[str, str], List[dict]] = {}
  anchors: List[float] = []
  for round_ in range(FLAGS.repeats):
    anchors.append(anchor())
    for stage in FLAGS.stages:
      for name, extra in variants.items():
        model_dir = os.path.join(work, f"{stage}-{name}")
        full = run_command(stage, extra, model_dir)
        short = (run_command(stage, extra + [f"--max_steps={FLAGS.short_steps}"], model_dir)
                 if FLAGS.short_steps else (float("nan"), float("nan"), 0))
        slope = (full[0] - short[0]) / max(1, full[2] - short[2])
        runs.setdefault((stage, name), []).append(
            {"cpu": full[0], "wall": full[1], "examples": full[2], "slope": slope,
             "fixed": full[0] - slope * full[2], "anchor": anchors[-1]})
        print(f"round {round_ + 1} {stage} {name}: {full[0]:.1f} s CPU, {full[1]:.1f} s wall, "
              f"{full[2]:,} examples; short {short[0]:.1f} s CPU, {short[2]:,} examples; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
  print(f"\nanchor: {1e6 * statistics.median(anchors):.2f} CPU us per example "
        f"(median of {len(anchors)})")
  print(f"{'stage':<9s} {'variant':<10s} {'whole us/ex':>11s} {'slope us/ex':>11s} "
        f"{'fixed s':>8s} {'wall s':>7s} {'anchor/whole':>12s} {'anchor/slope':>12s}")
  for (stage, name), rows in runs.items():
    def median(key: str) -> float:
      return statistics.median(r[key] for r in rows)
    whole = statistics.median(r["cpu"] / r["examples"] for r in rows)
    print(f"{stage:<9s} {name:<10s} {1e6 * whole:11.2f} {1e6 * median('slope'):11.2f} "
          f"{median('fixed'):8.1f} {median('wall'):7.1f} "
          f"{statistics.median(r['anchor'] * r['examples'] / r['cpu'] for r in rows):11.2f}x "
          f"{statistics.median(r['anchor'] / r['slope'] for r in rows):11.2f}x")
  print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


def run() -> None:
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
