"""Long-lived trial workers: processes that import TensorFlow once and run jobs one by one.

    python -m experiments.trial_pool      # a worker: JSON jobs on stdin, one reply per line

A study is hundreds of short stage runs. As child processes of their own, each paid
TensorFlow's import and start-up (the better part of a 1-day run); a worker pays them once.
Each job runs exactly as its stage command would: `execute` clears Keras's session, then calls
`driver.train` with the job's config (which seeds everything), so a job's metrics do not depend
on what the worker ran before (tests/test_trial_pool.py checks it against a fresh process).

The parent (`WorkerPool`) owns the workers: it sends one job per line and reads one reply per
line on a private pipe (the worker's stdout is its stderr, so a stray print cannot corrupt the
protocol). It retires a worker after `max_jobs` jobs, once its resident memory passes
`max_rss_gb`, or after an unexpected failure, and starts a fresh one for the next job. A
worker dies with its parent (Linux's parent-death signal, and a watchdog elsewhere), so a
killed study leaves no training behind holding a stage's lock.
"""

import collections
import ctypes
import json
import logging as py_logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import IO, Any, Deque, Dict, List, Optional

import tensorflow as tf

from data.plumbing import command
from experiments import jobs as jobs_lib
from stages import driver

TAIL_LINES = 15  # log lines of a failed job quoted in its error


class JobFailed(command.UserError):
  """A job that failed in its worker: one line naming it, then the tail of its log."""


# ----------------------------------------------------------------------------- in the worker


class _LogTail(py_logging.Handler):
  """The last log lines of the job running now, for its error message."""

  def __init__(self) -> None:
    super().__init__()
    self.lines: Deque[str] = collections.deque(maxlen=TAIL_LINES)
    self.setFormatter(py_logging.Formatter("%(levelname).1s %(message)s"))

  def emit(self, record: py_logging.LogRecord) -> None:
    self.lines.append(self.format(record))


def execute(message: Dict[str, Any]) -> Dict[str, Any]:
  """Runs one job (`jobs.Job.to_json()`) in this process, as its command would; its metrics."""
  tf.keras.backend.clear_session()  # no layer names, graphs or caches of the previous job
  job = jobs_lib.Job.from_json(message)
  return driver.train(job.task_class(), job.config)


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _resident_gb() -> float:
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
  except (OSError, ValueError):
    return 0.0


def _die_with_parent() -> None:
  """SIGTERM when the parent dies (Linux), and a watchdog for systems without it."""
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass
  parent = os.getppid()

  def watch() -> None:
    while True:
      time.sleep(2)
      if os.getppid() != parent:
        os._exit(1)

  threading.Thread(target=watch, daemon=True).start()


def _serve(requests: IO[str], replies: IO[str]) -> None:
  """Runs each job of `requests` and writes its reply to `replies`, until end of input."""
  tail = _LogTail()
  py_logging.getLogger().addHandler(tail)
  for line in requests:
    tail.lines.clear()
    reply: Dict[str, Any]
    cpu, wall = _cpu_seconds(), time.perf_counter()
    try:
      reply = {"ok": True, "metrics": execute(json.loads(line))}
    except command.EXPECTED_ERRORS as error:
      reply = {"ok": False, "expected": True, "error": command.error_message(error),
               "tail": list(tail.lines)}
    except Exception as error:  # noqa: BLE001 (a bug: the parent shows it and retires us)
      trace = traceback.format_exc().strip().splitlines()[-TAIL_LINES:]
      reply = {"ok": False, "expected": False,
               "error": f"{type(error).__name__}: {error}", "tail": list(tail.lines) + trace}
    reply["rss_gb"] = _resident_gb()
    # What the job cost this process (every thread): the study's per-trial cost figures.
    reply["cost"] = {"job_cpu_seconds": _cpu_seconds() - cpu,
                     "job_wall_seconds": time.perf_counter() - wall}
    replies.write(json.dumps(reply, default=_json_default) + "\n")
    replies.flush()


def _json_default(value: Any) -> Any:
  if hasattr(value, "item"):  # numpy scalars
    return value.item()
  if hasattr(value, "tolist"):
    return value.tolist()
  raise TypeError(f"not JSON: {type(value).__name__}")


def main() -> None:
  """A worker: replies go to a private copy of stdout; stdout itself becomes stderr."""
  _die_with_parent()
  replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
  from absl import logging as absl_logging
  absl_logging.use_absl_handler()
  absl_logging.set_verbosity(absl_logging.INFO)
  _serve(sys.stdin, replies)


# ----------------------------------------------------------------------------- in the parent


class _Worker:
  """One worker process and its pipes."""

  def __init__(self, log: Optional[str]):
    self.log = open(log, "a") if log else None
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "")
                                                  .split(os.pathsep) if p])
    self.process = subprocess.Popen(
        [sys.executable, "-m", "experiments.trial_pool"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=self.log or subprocess.DEVNULL, text=True, env=env)
    self.jobs = 0

  def run(self, message: Dict[str, Any]) -> Dict[str, Any]:
    """The worker's reply to one job; a reply saying it died if it did."""
    assert self.process.stdin is not None and self.process.stdout is not None
    self.jobs += 1
    try:
      self.process.stdin.write(json.dumps(message) + "\n")
      self.process.stdin.flush()
      line = self.process.stdout.readline()
    except (BrokenPipeError, OSError):
      line = ""
    if not line:
      code = self.process.wait()
      why = f"killed by signal {-code}" if code < 0 else f"exit {code}"
      return {"ok": False, "expected": False, "error": f"the trial worker died ({why})",
              "tail": []}
    return json.loads(line)

  def close(self) -> None:
    if self.process.poll() is None:
      try:
        assert self.process.stdin is not None
        self.process.stdin.close()  # end of input: the worker returns
        self.process.wait(timeout=30)
      except (OSError, subprocess.TimeoutExpired):
        self.process.kill()
        self.process.wait()
    if self.log:
      self.log.close()


class WorkerPool:
  """Trial workers shared by the threads of a scheduler: `run(job)` takes an idle worker (or
  starts one), runs the job there and gives the worker back, or retires it.

  Args:
    max_jobs: jobs a worker runs before it is replaced.
    max_rss_gb: a worker whose resident memory passes this after a job is replaced (0: no
      limit).
    log_dir: each worker's log (its stderr) goes to log_dir/worker-<n>.log; None: discarded.
  """

  def __init__(self, max_jobs: int = 25, max_rss_gb: float = 0.0,
               log_dir: Optional[str] = None):
    self.max_jobs, self.max_rss_gb, self.log_dir = max_jobs, max_rss_gb, log_dir
    self._idle: List[_Worker] = []
    self._lock = threading.Lock()
    self._started = 0

  def __enter__(self) -> "WorkerPool":
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()

  def run(self, message: Dict[str, Any], label: str) -> Dict[str, Any]:
    """The metrics of the job `message`; JobFailed naming `label` if it failed."""
    worker = self._take()
    reply = worker.run(message)
    healthy = reply["ok"] or reply.get("expected", False)
    if (healthy and worker.jobs < self.max_jobs
        and not (self.max_rss_gb > 0 and reply.get("rss_gb", 0.0) > self.max_rss_gb)):
      with self._lock:
        self._idle.append(worker)
    else:
      worker.close()
    if not reply["ok"]:
      tail = "\n".join(reply.get("tail") or [])
      raise JobFailed(f"{label} ... failed: {reply['error']}" + (f"\n{tail}" if tail else ""))
    return {**reply["metrics"], **reply.get("cost", {})}

  def _take(self) -> _Worker:
    with self._lock:
      if self._idle:
        return self._idle.pop()
      self._started += 1
      number = self._started
    log = None
    if self.log_dir:
      os.makedirs(self.log_dir, exist_ok=True)
      log = os.path.join(self.log_dir, f"worker-{number}.log")
    return _Worker(log)

  def close(self) -> None:
    with self._lock:
      idle, self._idle = self._idle, []
    for worker in idle:
      worker.close()


if __name__ == "__main__":
  main()
