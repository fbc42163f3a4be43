"""What a study costs: a run's fixed and per-row CPU cost, and a whole study end to end.

    python -m benchmarks.study_cost --world_dir=W --part=fixed [--code_dirs=/old/checkout,.]
    python -m benchmarks.study_cost --part=study --report_dir=/tmp/sc \
        --study_flagfile=experiments/configs/paper_small_core.cfg [--code_dirs=/old,.]

--part=fixed fits, for a 1-day fine CTR run, CPU seconds = fixed + slope x rows over runs of
several lengths (--steps x the batch): the intercept is what every run pays whatever its data
(TensorFlow's start, tracing, validation checks, evaluation and export). Each code directory
(--code_dirs: another checkout's root, e.g. the commit before a change, and this one) runs the
stage command as a fresh process, its CPU seconds read from the kernel (the children's
rusage); this checkout also runs the same jobs one after another in one long-lived trial
worker, as the study does (experiments.trial_pool; CPU seconds per job).

--part=study runs `python -m experiments.paper` on --study_flagfile into a fresh report dir
per code directory (a fresh work dir: nothing reused), and prints its wall and CPU time; with
this checkout it also fits each stage's per-trial fixed and per-row cost from the trials' own
job_cpu_seconds (tables.csv). The two code dirs' tables.csv are compared: identical figures,
but for timings, or the differences are listed.

Figures, not assertions; the load average is printed beside each (the machine is shared).
"""

import os
import resource
import subprocess
import sys
import time
from typing import Dict, List, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np

FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("seconds", "examples_per_second", "job_cpu_seconds", "job_wall_seconds", "rss_gb",
          "timed_steps")


def define_flags() -> None:
  flags.DEFINE_enum("part", "fixed", ["fixed", "study"], "What to measure.")
  flags.DEFINE_string("world_dir", None, "--part=fixed: the world (the small preset's).")
  flags.DEFINE_list("code_dirs", [HERE], "Checkouts whose code is measured, side by side.")
  flags.DEFINE_list("steps", ["25", "50", "100", "195"], "--part=fixed: run lengths (steps).")
  flags.DEFINE_integer("repeats", 2, "--part=fixed: runs per length and way of running.")
  flags.DEFINE_string("work_dir", "/tmp/study_cost", "Scratch directory (model dirs).")
  flags.DEFINE_string("study_flagfile", "experiments/configs/paper_small_core.cfg",
                      "--part=study: the study measured.")
  flags.DEFINE_string("report_dir", "/tmp/study_cost/report", "--part=study: where reports go "
                      "(one subdirectory per code dir).")


def _child_cpu() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def run_child(argv: List[str], code_dir: str) -> Tuple[float, float]:
  """(CPU seconds, wall seconds) of `argv` run in `code_dir` with its code on the path."""
  env = dict(os.environ, PYTHONPATH=code_dir)
  cpu, wall = _child_cpu(), time.perf_counter()
  result = subprocess.run(argv, cwd=code_dir, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  if result.returncode:
    raise RuntimeError(f"{' '.join(argv[:4])} failed in {code_dir}:\n{result.stderr[-2000:]}")
  return _child_cpu() - cpu, time.perf_counter() - wall


def fit(rows: Sequence[float], cpu: Sequence[float]) -> Tuple[float, float]:
  """(intercept in CPU seconds, slope in CPU seconds per million rows) of a least-squares line."""
  slope, intercept = np.polyfit(np.asarray(rows, float) / 1e6, np.asarray(cpu, float), 1)
  return float(intercept), float(slope)


def fine_ctr_argv(model_dir: str, steps: int) -> List[str]:
  return [sys.executable, "-m", "stages.fine", "--task=ctr", f"--world_dir={FLAGS.world_dir}",
          f"--model_dir={model_dir}", "--train_days=1", "--eval_day=8", f"--max_steps={steps}",
          "--noreuse"]


def fixed_cost() -> None:
  batch = 1024
  results: Dict[str, List[Tuple[int, float]]] = {}
  for k, code_dir in enumerate(FLAGS.code_dirs):
    name = f"{os.path.basename(os.path.abspath(code_dir))} (command)"
    for repeat in range(FLAGS.repeats):
      for steps in map(int, FLAGS.steps):
        model_dir = os.path.join(FLAGS.work_dir, f"fixed{k}", f"r{repeat}s{steps}")
        load = os.getloadavg()[0]
        cpu, wall = run_child(fine_ctr_argv(model_dir, steps), code_dir)
        results.setdefault(name, []).append((steps * batch, cpu))
        print(f"{name:28s} steps {steps:4d}: {cpu:6.1f} s CPU, {wall:6.1f} s wall, load {load:.1f}",
              flush=True)
  results.update(worker_runs(batch))
  print("\n1-day fine CTR, CPU seconds = fixed + slope x rows (least squares):")
  for name, points in results.items():
    intercept, slope = fit(*zip(*points))
    print(f"  {name:28s} fixed {intercept:6.1f} s, {slope:6.1f} s per million rows "
          f"({len(points)} runs)")


def worker_runs(batch: int) -> Dict[str, List[Tuple[int, float]]]:
  """The same runs as jobs of one long-lived trial worker (this checkout's code)."""
  from experiments import jobs
  from experiments import trial_pool
  import models  # noqa: F401 (TF_USE_LEGACY_KERAS before TensorFlow)
  from stages import catalogue
  from stages import config as config_lib
  name = "this checkout (trial worker)"
  points = []
  with trial_pool.WorkerPool(max_jobs=1000) as pool:
    for repeat in range(FLAGS.repeats + 1):
      for steps in map(int, FLAGS.steps):
        base = config_lib.TrainConfig(
            world_dir=FLAGS.world_dir, train_days=(1,), eval_day=8, max_steps=steps,
            model_dir=os.path.join(FLAGS.work_dir, "worker", f"r{repeat}s{steps}"))
        job = jobs.Job(catalogue.FINE_CTR.make_config(base))
        metrics = pool.run(job.to_json(), "fine ctr")
        if repeat == 0:
          continue  # the first pass pays the worker's start: not a per-run cost
        points.append((steps * batch, metrics["job_cpu_seconds"]))
        print(f"{name:28s} steps {steps:4d}: {metrics['job_cpu_seconds']:6.1f} s CPU, "
              f"{metrics['job_wall_seconds']:6.1f} s wall", flush=True)
  return {name: points}


def study_cost() -> None:
  tables = {}
  for k, code_dir in enumerate(FLAGS.code_dirs):
    report_dir = os.path.join(FLAGS.report_dir, f"code{k}")
    argv = [sys.executable, "-m", "experiments.paper", f"--flagfile={FLAGS.study_flagfile}",
            f"--report_dir={report_dir}", f"--work_dir={report_dir}/work"]
    load = os.getloadavg()[0]
    cpu, wall = run_child(argv, code_dir)
    print(f"{code_dir}: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU (load at start "
          f"{load:.1f})", flush=True)
    tables[code_dir] = os.path.join(report_dir, "tables.csv")
    per_trial_cost(tables[code_dir])
  if len(tables) == 2:
    compare_tables(*tables.values())


def per_trial_cost(path: str) -> None:
  """Each stage's fixed and per-row CPU cost, fitted on its trials' job_cpu_seconds."""
  import pandas as pd
  frame = pd.read_csv(path)
  if "job_cpu_seconds" not in frame:
    return
  frame = frame.dropna(subset=["job_cpu_seconds"]).drop_duplicates(
      subset=["stage", "variant", "seed", "world_seed", "days"])
  print(f"  {len(frame)} trials, {frame['job_cpu_seconds'].sum() / 60:.1f} min of job CPU")
  for (stage, variant), part in frame.groupby(["stage", "variant"]):
    # Examples the run trained on: its steps (timed ones and the first) times its batch.
    examples = (part["timed_steps"] + 1) * part.get("batch_size", 1024)
    if len(part) >= 2 and np.ptp(examples) > 0:
      intercept, slope = fit(examples, part["job_cpu_seconds"])
      print(f"  {stage:9s} {variant:9s}: fixed {intercept:6.1f} s, {slope:6.1f} s per million "
            f"examples ({len(part)} trials)")
    else:
      print(f"  {stage:9s} {variant:9s}: {part['job_cpu_seconds'].mean():6.1f} s per trial "
            f"({len(part)} trials)")


def compare_tables(first: str, second: str) -> None:
  import pandas as pd
  old, new = pd.read_csv(first), pd.read_csv(second)
  keys = ["study", "stage", "variant", "world_seed", "seed", "days"]
  old, new = (t.set_index(keys).sort_index() for t in (old, new))
  shared = [c for c in old.columns if c in new.columns and not any(t in c for t in TIMING)]
  numeric = [c for c in shared if pd.api.types.is_numeric_dtype(old[c])]
  differences = (old[numeric] - new[numeric]).abs().max()
  moved = differences[differences > 0]
  print("tables.csv: identical figures" if moved.empty else
        f"tables.csv: figures that moved (largest absolute difference):\n{moved.to_string()}")


def main(argv) -> None:
  del argv
  if FLAGS.part == "fixed":
    if not FLAGS.world_dir:
      raise app.UsageError("--part=fixed needs --world_dir")
    fixed_cost()
  else:
    study_cost()


if __name__ == "__main__":
  define_flags()
  app.run(main)
