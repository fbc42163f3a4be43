"""Run a stage command in a fresh process, the way a user would, and return its metrics.

Drivers that train many models (the demo, the paper study) run each stage as its own
`python -m stages.<stage>` process: TensorFlow and tf.data keep memory across trainings in one
process (a 54-run study grew past 20 GB in-process), and a separate process per run also keeps
one run's failure from taking the study down with it.

A run the runner has already made is reused without starting a process: beside the stage's
metrics.json it leaves runner.json, the digest of the exact command line, the world and the
identity of every export the run reads (a coarse pfd_md student's fine CTR teacher) that made it.
A child's command line is written from its config's fields (`stages.config.flag_fields`).

`run_stages` runs many such runs, several at a time (`workers`), each once the runs it reads
are done, and starts another only while the machine has `max_worker_gb` of memory available.
Each run is the same child process with the same command as when run alone, and stage training
is deterministic (`stages.training`), so results do not depend on the number of workers.
With a Ray engine (`data.engine`, --runner=ray) each run is a Ray task that starts that same
child process, on this machine or on a cluster's nodes.
"""

from concurrent import futures
import hashlib
import json
import math
import os
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from data import engine as engine_lib
from data import files
from models import distribute
from stages import coarse
from stages import config as config_lib
from stages import driver
from stages import fine
from stages import retrieval

# The task (and so the `python -m` module) that trains each kind of config.
TASKS: Dict[Type[config_lib.TrainConfig], Type[driver.StageTask]] = {
    config_lib.RetrievalConfig: retrieval.RetrievalTask,
    config_lib.FineConfig: fine.FineTask,
    config_lib.CoarseConfig: coarse.CoarseTask,
}
RECEIPT = "runner.json"


def _flag(name: str, value: Any) -> List[str]:
  if value is None:
    return []
  if isinstance(value, bool):
    return [f"--{name}" if value else f"--no{name}"]
  if isinstance(value, (list, tuple)):
    return [f"--{name}=" + ",".join(str(v) for v in value)]
  return [f"--{name}={value}"]


def config_flags(config: config_lib.TrainConfig,
                 config_class: Optional[Type[config_lib.TrainConfig]] = None,
                 skip: Sequence[str] = ()) -> List[str]:
  """One flag per field of `config_class` (default: the config's own class), except `skip`."""
  flags: List[str] = []
  for field in config_lib.flag_fields(config_class or type(config)):
    if field.name not in skip:
      flags += _flag(field.name, getattr(config, field.name))
  return flags


def command_line(config: config_lib.TrainConfig,
                 task: Optional[Type[driver.StageTask]] = None) -> List[str]:
  """The `python -m <module> ...` argv that trains `config` with `task` (default: the stage's
  own, `stages.X` with one flag per config field; a task with a `command_flags(config)`
  classmethod, such as the linear reference, names its own flags)."""
  task = task or TASKS[type(config)]
  own_flags = getattr(task, "command_flags", None)
  return ([sys.executable, "-m", task.__module__]
          + (own_flags(config) if own_flags else config_flags(config)))


def command_digest(argv: List[str], world_dir: str,
                   upstream: Dict[str, Optional[str]]) -> Optional[str]:
  """Names one run: the stage command (not the interpreter), the world it read and the
  exports it reads (a coarse pfd_md student's fine CTR teacher); None without a world (the
  child then says what is missing)."""
  manifest = os.path.join(world_dir, "manifest.json")
  if not os.path.exists(manifest):
    return None
  world_hash = files.read_json(manifest)["world_hash"]
  blob = json.dumps({"argv": argv[1:], "world_hash": world_hash, "upstream": upstream},
                    sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_stage(config: config_lib.TrainConfig,
              task: Optional[Type[driver.StageTask]] = None) -> Dict[str, Any]:
  """Trains (or, with config.reuse, reuses) one stage run in a child process; its metrics.
  `task`: what trains it, default the stage's own task (else e.g. its linear reference)."""
  task = task or TASKS[type(config)]
  if config.strategy in distribute.CLUSTER_STRATEGIES:
    # Every child would read the same TF_CONFIG and claim the same task of one cluster.
    raise config_lib.StageError(
        f"--strategy={config.strategy} runs one stage command per cluster task; run the stage "
        "commands on the cluster (README, 'Running across machines'); a study or the demo "
        "takes --strategy=default or mirrored")
  argv = command_line(config, task)
  out_dir = task.output_dir(config)
  metrics_path = os.path.join(out_dir, "metrics.json")
  receipt_path = os.path.join(out_dir, RECEIPT)
  digest = command_digest(argv, config.world_dir, task.upstream(config))
  if config.reuse and digest and os.path.exists(receipt_path) and os.path.exists(metrics_path):
    receipt, metrics = files.read_json(receipt_path), files.read_json(metrics_path)
    # The receipt must be of this command and of the metrics.json now there.
    if receipt == {"command": digest, "config_key": metrics.get("config_key")}:
      return metrics
  result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  if result.returncode != 0:
    tail = "\n".join(result.stderr.strip().splitlines()[-15:])
    raise config_lib.StageError(f"{' '.join(argv[1:4])} ... failed (exit {result.returncode}):"
                                f"\n{tail}")
  metrics = files.read_json(metrics_path)
  if digest:
    files.write_json(receipt_path, {"command": digest, "config_key": metrics.get("config_key")})
  return metrics


def available_gb() -> float:
  """The memory the kernel says new processes can use (MemAvailable), in GB; inf if unknown."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) / 2 ** 20
  except OSError:
    pass
  return math.inf


def worker_count(workers: int, max_worker_gb: float) -> int:
  """`workers`, lowered so that each has `max_worker_gb` of the memory available now (>= 1)."""
  if max_worker_gb <= 0:
    return max(1, workers)
  return max(1, min(workers, int(available_gb() // max_worker_gb)))


def run_stages(configs: Sequence[config_lib.TrainConfig], after: Sequence[Sequence[int]],
               workers: int = 1, max_worker_gb: float = 0.0,
               done: Optional[Callable[[int, Dict[str, Any]], None]] = None,
               tasks: Optional[Sequence[Optional[Type[driver.StageTask]]]] = None,
               engine: Optional[engine_lib.Engine] = None) -> List[Dict[str, Any]]:
  """Runs every config (`run_stage`, with `tasks[i]` if given), config i only after the
  configs `after[i]`; at most
  `worker_count(workers, max_worker_gb)` at a time, a new one only while `max_worker_gb` is
  available. Returns the metrics in the order of `configs`; `done(i, metrics)` as each ends.
  The first failure stops new starts and is raised once the running ones end.

  With a Ray `engine`, each run is a Ray task instead (`workers` is then Ray's business: one
  CPU and `max_worker_gb` of Ray's memory resource per run), started once the runs it reads
  are done; the same child process and command line, so the same receipts and metrics."""
  if engine is not None and not engine.is_local:
    return _run_on_engine(engine, configs, after, max_worker_gb, done, tasks)
  limit = worker_count(workers, max_worker_gb)
  results: List[Optional[Dict[str, Any]]] = [None] * len(configs)
  pending = list(range(len(configs)))
  running: Dict[futures.Future, int] = {}
  with futures.ThreadPoolExecutor(max_workers=limit) as pool:
    while pending or running:
      ready = [i for i in pending if all(results[j] is not None for j in after[i])]
      memory_short = False
      for i in ready:
        if len(running) >= limit:
          break
        if running and max_worker_gb > 0 and available_gb() < max_worker_gb:
          memory_short = True
          break
        pending.remove(i)
        task = [tasks[i]] if tasks is not None and tasks[i] is not None else []
        running[pool.submit(run_stage, configs[i], *task)] = i
      if not running:
        raise ValueError(f"runs {pending} wait on each other: the dependencies have a cycle")
      finished, _ = futures.wait(running, timeout=10 if memory_short else None,
                                 return_when=futures.FIRST_COMPLETED)
      for future in finished:
        i = running.pop(future)
        results[i] = future.result()
        if done:
          done(i, results[i])
  return [r for r in results if r is not None]


def _run_on_engine(engine: engine_lib.Engine, configs: Sequence[config_lib.TrainConfig],
                   after: Sequence[Sequence[int]], max_worker_gb: float,
                   done: Optional[Callable[[int, Dict[str, Any]], None]],
                   tasks: Optional[Sequence[Optional[Type[driver.StageTask]]]]
                   ) -> List[Dict[str, Any]]:
  """run_stages on an engine: each run one task, dependencies as the engine's `after`."""
  runs = [(config, tasks[i] if tasks is not None else None) for i, config in enumerate(configs)]
  resources: Dict[str, float] = {"num_cpus": 1}
  if max_worker_gb > 0:
    resources["memory"] = max_worker_gb * 2 ** 30
  return engine.map(run_stage_task, runs, label=run_label, after=after, resources=resources,
                    done=done)


def run_stage_task(run: Tuple[config_lib.TrainConfig, Optional[Type[driver.StageTask]]]
                   ) -> Dict[str, Any]:
  """One run as an engine task: `run_stage(config, task)`."""
  return run_stage(*run)


def run_label(run: Tuple[config_lib.TrainConfig, Optional[Type[driver.StageTask]]]) -> str:
  """A run named in errors: its module, variant, seed, training days and model dir."""
  config, task = run
  days = f"--train_days={','.join(map(str, config.train_days))} " if config.train_days else ""
  return (f"{command_line(config, task)[2]} --variant={config.variant} --seed={config.seed} "
          f"{days}--model_dir={config.model_dir}")
