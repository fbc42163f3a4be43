"""A local multi-process cluster: every task of a TF_CONFIG cluster as a process on this host.

    python -m experiments.cluster --workers=2 -- \\
        python -m stages.coarse --strategy=multi_worker --variant=pfd --world_dir=W --model_dir=M
    python -m experiments.cluster --workers=2 --ps=2 -- \\
        python -m stages.fine --task=cvr --variant=pfd --strategy=parameter_server \\
        --validation_fraction=0 --world_dir=W --model_dir=M

Picks a free port per task, starts the command after `--` once per task with that task's
TF_CONFIG (`--ps=0`: `worker` tasks only, for --strategy=multi_worker; `--ps>0`: a `chief`,
the workers and the ps tasks, for --strategy=parameter_server), waits for the chief (or every
worker), stops the servers it started, and prints the chief's (or worker 0's) stdout: the
stage's metrics. Each task's output goes to --task_logs/<task>.{out,err}. On real machines the
same command runs once per machine with that machine's TF_CONFIG (README, "Running across
machines"); this command is for trying it, for tests and for the benchmark.
"""

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from absl import flags

from data.plumbing import command

FLAGS = flags.FLAGS
POLL_SECONDS = 0.5


@dataclasses.dataclass
class Task:
  """One process of the cluster."""
  job: str
  index: int
  process: subprocess.Popen
  log: str  # path prefix: <log>.out, <log>.err

  @property
  def name(self) -> str:
    return f"{self.job}:{self.index}"

  def output(self) -> str:
    with open(self.log + ".out") as f:
      return f.read()

  def error_tail(self, lines: int = 15) -> str:
    with open(self.log + ".err") as f:
      return "\n".join(f.read().strip().splitlines()[-lines:])


@dataclasses.dataclass
class ClusterRun:
  """A finished local cluster: its tasks' exit codes and the leading task's stdout."""
  cluster: Dict[str, List[str]]
  returncodes: Dict[str, Optional[int]]
  output: str
  log_dir: str
  seconds: float
  timed_out: float = 0.0  # the --timeout that stopped the cluster (0: it was not stopped)

  @property
  def ok(self) -> bool:
    return all(code == 0 for code in self.returncodes.values())


def free_ports(n: int, host: str = "127.0.0.1") -> List[int]:
  """`n` ports nothing listens on now (held open together, so they are distinct)."""
  sockets = []
  try:
    for _ in range(n):
      sock = socket.socket()
      sock.bind((host, 0))
      sockets.append(sock)
    return [sock.getsockname()[1] for sock in sockets]
  finally:
    for sock in sockets:
      sock.close()


def cluster_spec(workers: int, ps: int = 0, host: str = "127.0.0.1") -> Dict[str, List[str]]:
  """{"worker": [...]} (multi-worker) or {"chief": [...], "worker": [...], "ps": [...]}."""
  if workers < 1 or ps < 0:
    raise command.UserError(f"--workers must be >= 1 and --ps >= 0, got {workers}, {ps}")
  jobs = {"worker": workers} if ps == 0 else {"chief": 1, "worker": workers, "ps": ps}
  ports = iter(free_ports(sum(jobs.values()), host))
  return {job: [f"{host}:{next(ports)}" for _ in range(count)] for job, count in jobs.items()}


def tf_config(cluster: Dict[str, List[str]], job: str, index: int) -> str:
  return json.dumps({"cluster": cluster, "task": {"type": job, "index": index}})


def launch(argv: Sequence[str], workers: int, ps: int = 0, log_dir: Optional[str] = None,
           timeout: float = 0.0, host: str = "127.0.0.1",
           env: Optional[Dict[str, str]] = None) -> ClusterRun:
  """Runs `argv` once per task of a local cluster and returns when the training is done.

  The leading task is the chief (with ps tasks) or worker 0. Servers (ps tasks and, with a
  chief, the workers) run until the chief ends; then they are stopped. A task that fails
  before then stops the whole cluster. `timeout` > 0: stop everything after that many seconds.
  """
  check_launch(argv, log_dir, timeout)
  cluster = cluster_spec(workers, ps, host)
  log_dir = log_dir or tempfile.mkdtemp(prefix="pfd-cluster-")
  os.makedirs(log_dir, exist_ok=True)
  started = time.perf_counter()
  tasks: List[Task] = []
  stopped = set()  # tasks still running when the cluster was done (or failed)
  timed_out = 0.0
  try:
    for job in ("ps", "worker", "chief"):  # servers first
      for index in range(len(cluster.get(job, []))):
        log = os.path.join(log_dir, f"{job}{index}")
        task_env = {**os.environ, **(env or {}), "TF_CONFIG": tf_config(cluster, job, index)}
        with open(log + ".out", "w") as out, open(log + ".err", "w") as err:
          try:
            process = subprocess.Popen(list(argv), stdout=out, stderr=err, env=task_env)
          except OSError as error:
            raise command.UserError(f"cannot start {argv[0]!r}: "
                                    f"{error.strerror or error}") from None
        tasks.append(Task(job, index, process, log))
    leader = next(t for t in tasks if t.job == ("chief" if ps else "worker") and t.index == 0)
    awaited = [leader] if ps else [t for t in tasks if t.job == "worker"]
    timed_out = timeout if _wait(tasks, awaited, timeout, started) else 0.0
  finally:
    for task in tasks:
      if task.process.poll() is None:
        stopped.add(task.name)
        task.process.terminate()
    for task in tasks:
      try:
        task.process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        task.process.kill()
        task.process.wait()
  # Servers stopped once the chief had ended well did their job.
  served = ps and leader.process.returncode == 0
  codes = {t.name: 0 if served and t.name in stopped else t.process.returncode for t in tasks}
  return ClusterRun(cluster, codes, leader.output(), log_dir, time.perf_counter() - started,
                    timed_out)


def check_launch(argv: Sequence[str], log_dir: Optional[str], timeout: float) -> None:
  """Refuses, before anything starts or is written, a launch that cannot work."""
  if not argv:
    raise command.UserError("no command to run; put it after `--`, e.g. `-- python -m "
                            "stages.coarse --strategy=multi_worker ...`")
  program = argv[0]
  if os.sep in program:
    if not (os.path.isfile(program) and os.access(program, os.X_OK)):
      raise command.UserError(f"the command after `--`, {program!r}, is not an executable "
                              "file")
  elif shutil.which(program) is None:
    raise command.UserError(f"the command after `--`, {program!r}, is not found on PATH")
  if log_dir and os.path.exists(log_dir) and not os.path.isdir(log_dir):
    raise command.UserError(f"--task_logs={log_dir} is a file, not a directory")
  if timeout < 0:
    raise command.UserError(f"--timeout must be >= 0 (0: never), got {timeout}")


def _wait(tasks: List[Task], awaited: List[Task], timeout: float, started: float) -> bool:
  """Until every awaited task has ended, or any task has failed, or the timeout; True when
  the timeout ended the wait."""
  while True:
    if all(t.process.poll() is not None for t in awaited):
      return False
    failed = [t for t in tasks if t.process.poll() not in (None, 0)]
    if failed:
      return False
    if timeout and time.perf_counter() - started > timeout:
      return True
    time.sleep(POLL_SECONDS)


def describe_failure(run: ClusterRun) -> str:
  """Why the cluster failed: the timeout that stopped it, or each failed task's exit code and
  the end of its stderr."""
  if run.timed_out:
    running = [name for name, code in run.returncodes.items() if code != 0]
    return (f"the cluster was still running after --timeout={run.timed_out:g}s; its tasks "
            f"({', '.join(running)}) were stopped; logs in {run.log_dir}")
  lines = []
  for name, code in run.returncodes.items():
    if code != 0:
      job, index = name.split(":")
      with open(os.path.join(run.log_dir, f"{job}{index}.err")) as f:
        tail = "\n".join(f.read().strip().splitlines()[-15:])
      lines.append(f"{name} exited {code}:\n{tail}")
  return "\n".join(lines)


def define_flags() -> None:
  flags.DEFINE_integer("workers", 2, "Worker tasks.")
  flags.DEFINE_integer("ps", 0, "Parameter-server tasks; with any, a chief task too (for "
                       "--strategy=parameter_server); 0: workers only (multi_worker).")
  flags.DEFINE_string("task_logs", None, "Where each task's stdout and stderr go. Default: a "
                      "fresh temp dir (printed).")
  flags.DEFINE_float("timeout", 0.0, "Stop every task after this many seconds (0: never).")
  flags.DEFINE_string("host", "127.0.0.1", "The address every task listens on.")


def _terminated(signum, frame) -> None:
  """SIGTERM: unwinds `launch`, whose cleanup stops every task it started."""
  raise SystemExit(128 + signum)


def run() -> None:
  define_flags()

  def main(argv: List[str]) -> None:
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
      result = launch(argv[1:], FLAGS.workers, FLAGS.ps, FLAGS.task_logs, FLAGS.timeout,
                      FLAGS.host)
    except command.UserError as error:
      command.fail("experiments.cluster", str(error))
    except OSError as error:
      command.fail("experiments.cluster", command.storage_problem(error)
                   or f"{error.filename or ''}: {error.strerror or error}")
    finally:
      signal.signal(signal.SIGTERM, previous)
    sys.stdout.write(result.output)
    sys.stderr.write(f"experiments.cluster: {json.dumps(result.returncodes)} in "
                     f"{result.seconds:.1f}s; logs in {result.log_dir}\n")
    if result.timed_out:
      command.fail("experiments.cluster", describe_failure(result))
    if not result.ok:
      command.fail("experiments.cluster", "a task failed\n" + describe_failure(result))

  command.start(main)


if __name__ == "__main__":
  run()
