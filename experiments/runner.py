"""Run stage jobs the way a user would run the stage commands, in long-lived worker processes.

Drivers that train many models (the demo, the paper study) run each stage run as a `Job`: a
stage config and what trains it (the stage's own task, or its linear reference). A job runs in
a trial worker (`experiments.trial_worker`), a process of its own that imports TensorFlow once
and runs jobs one after another, each exactly as its command would (`driver.train` on the same
config), so a study's hundreds of runs do not each pay TensorFlow's start-up. A worker is
replaced after `max_jobs_per_worker` jobs, once its memory passes `max_worker_gb`, and after
any job that failed unexpectedly: TensorFlow keeps memory across trainings in one process (a
54-run study grew past 20 GB in-process), and one run's failure stays its own.

A run the runner has already made is reused without running anything: beside the stage's
metrics.json it leaves runner.json, the digest of the job's exact command line
(`command_line`), the world and the identity of every export the run reads (a coarse pfd_md
student's fine CTR teacher). A job's command line is written from its config's fields
(`stages.config.command_flags`); the receipts are those a child process per run gave, so a
study resumes across the two.

`run_stages` runs many jobs, several at a time (`workers`), each once the jobs it reads are
done, and starts another only while the machine has `max_worker_gb` of memory available.
Stage training is deterministic (`stages.training`), so results depend neither on the number
of workers nor on which jobs a worker ran before (tested). With a Ray engine
(`data.plumbing.engine`, --runner=ray) each job is a Ray task run inside a Ray worker process,
which Ray also keeps for several tasks (`max_calls`).
"""

from concurrent import futures
import hashlib
import json
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from data.plumbing import engine as engine_lib
from data.plumbing import files
from experiments import jobs
from experiments import trial_pool
from models import distribute
from stages import config as config_lib

RECEIPT = "runner.json"
MAX_JOBS_PER_WORKER = 25  # then a fresh process: TensorFlow's memory grows across trainings


def command_digest(argv: List[str], world_dir: str,
                   upstream: Dict[str, Optional[str]]) -> Optional[str]:
  """Names one run: the stage command (not the interpreter), the world it read and the
  exports it reads (a coarse pfd_md student's fine CTR teacher); None without a world (the
  run then says what is missing)."""
  manifest = os.path.join(world_dir, "manifest.json")
  if not os.path.exists(manifest):
    return None
  world_hash = files.read_json(manifest)["world_hash"]
  blob = json.dumps({"argv": argv[1:], "world_hash": world_hash, "upstream": upstream},
                    sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _receipt(job: jobs.Job):
  """(digest, finished metrics or None) of `job`: the metrics when its receipt says it ran."""
  config, task = job.config, job.task_class()
  if config.strategy in distribute.CLUSTER_STRATEGIES:
    # Every run would read the same TF_CONFIG and claim the same task of one cluster.
    raise config_lib.StageError(
        f"--strategy={config.strategy} runs one stage command per cluster task; run the stage "
        "commands on the cluster (README, 'Running across machines'); a study or the demo "
        "takes --strategy=default or mirrored")
  out_dir = task.output_dir(config)
  metrics_path, receipt_path = (os.path.join(out_dir, name) for name in ("metrics.json",
                                                                          RECEIPT))
  digest = command_digest(jobs.command_line(job), config.world_dir, task.upstream(config))
  if config.reuse and digest and os.path.exists(receipt_path) and os.path.exists(metrics_path):
    receipt, metrics = files.read_json(receipt_path), files.read_json(metrics_path)
    # The receipt must be of this command and of the metrics.json now there.
    if receipt == {"command": digest, "config_key": metrics.get("config_key")}:
      return digest, metrics
  return digest, None


def run_stage(run: Any, pool: Optional[trial_pool.WorkerPool] = None,
              in_process: bool = False) -> Dict[str, Any]:
  """Trains (or, with config.reuse, reuses) one job (a Job or a stage config); its metrics.

  The job runs in a worker of `pool`, in a fresh worker of its own without one, or in this
  process with `in_process` (a Ray task's worker)."""
  job = jobs.as_job(run)
  digest, finished = _receipt(job)
  if finished is not None:
    return finished
  label = " ".join(jobs.command_line(job)[1:4])
  if in_process:
    metrics = trial_pool.execute(job.to_json())  # a Ray task: Ray accounts for its cost
  elif pool is not None:
    metrics = pool.run(job.to_json(), label)
  else:
    with trial_pool.WorkerPool(max_jobs=1) as own:
      metrics = own.run(job.to_json(), label)
  if digest:
    out_dir = job.task_class().output_dir(job.config)
    files.write_json(os.path.join(out_dir, RECEIPT),
                     {"command": digest, "config_key": metrics.get("config_key")})
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


def run_stages(runs: Sequence[Any], after: Sequence[Sequence[int]], workers: int = 1,
               max_worker_gb: float = 0.0,
               done: Optional[Callable[[int, Dict[str, Any]], None]] = None,
               engine: Optional[engine_lib.Engine] = None,
               log_dir: Optional[str] = None) -> List[Dict[str, Any]]:
  """Runs every job (Jobs or stage configs), job i only after the jobs `after[i]`; at most
  `worker_count(workers, max_worker_gb)` at a time, a new one only while `max_worker_gb` is
  available, in that many long-lived trial workers (their logs in `log_dir`, if given).
  Returns the metrics in the order of `runs`; `done(i, metrics)` as each ends. The first
  failure stops new starts and is raised once the running ones end.

  With a Ray `engine`, each job is a Ray task instead (`workers` is then Ray's business: one
  CPU and `max_worker_gb` of Ray's memory resource per job), started once the jobs it reads
  are done, run inside the Ray worker; the same receipts and metrics."""
  queued = [jobs.as_job(run) for run in runs]
  if engine is not None and not engine.is_local:
    return _run_on_engine(engine, queued, after, max_worker_gb, done)
  limit = worker_count(workers, max_worker_gb)
  with trial_pool.WorkerPool(max_jobs=MAX_JOBS_PER_WORKER, max_rss_gb=max_worker_gb,
                             log_dir=log_dir) as pool:
    return _schedule(queued, after, limit, max_worker_gb, done,
                     lambda job: run_stage(job, pool))


def _schedule(queued: Sequence[jobs.Job], after: Sequence[Sequence[int]], limit: int,
              max_worker_gb: float, done: Optional[Callable[[int, Dict[str, Any]], None]],
              run: Callable[[jobs.Job], Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Runs `run(job)` on `limit` threads, each job after the jobs it reads."""
  engine_lib.dependency_order(after)  # the one check that the dependencies have no cycle
  results: List[Optional[Dict[str, Any]]] = [None] * len(queued)
  pending = list(range(len(queued)))
  running: Dict[futures.Future, int] = {}
  with futures.ThreadPoolExecutor(max_workers=limit) as threads:
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
        running[threads.submit(run, queued[i])] = i
      finished, _ = futures.wait(running, timeout=10 if memory_short else None,
                                 return_when=futures.FIRST_COMPLETED)
      for future in finished:
        i = running.pop(future)
        metrics = future.result()
        results[i] = metrics
        if done:
          done(i, metrics)
  return [r for r in results if r is not None]


def _run_on_engine(engine: engine_lib.Engine, queued: Sequence[jobs.Job],
                   after: Sequence[Sequence[int]], max_worker_gb: float,
                   done: Optional[Callable[[int, Dict[str, Any]], None]]
                   ) -> List[Dict[str, Any]]:
  """run_stages on an engine: each job one task, dependencies as the engine's `after`."""
  resources: Dict[str, float] = {"num_cpus": 1, "max_calls": MAX_JOBS_PER_WORKER}
  if max_worker_gb > 0:
    resources["memory"] = max_worker_gb * 2 ** 30
  return engine.map(run_stage_task, list(queued), label=run_label, after=after,
                    resources=resources, done=done)


def run_stage_task(job: jobs.Job) -> Dict[str, Any]:
  """One job as an engine task, run in the engine's worker process."""
  return run_stage(job, in_process=True)


def run_label(job: jobs.Job) -> str:
  """A job named in errors: its module, variant, seed, training days and model dir."""
  config = job.config
  days = f"--train_days={','.join(map(str, config.train_days))} " if config.train_days else ""
  return (f"{jobs.command_line(job)[2]} --variant={config.variant} --seed={config.seed} "
          f"{days}--model_dir={config.model_dir}")
