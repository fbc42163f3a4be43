"""A study you can watch: progress, time left, a status file, and TensorBoard HParams.

`StudyProgress` receives the study's events through the runner's `done(i, metrics)` callback
(`experiments.runner.run_stages`, called as each run ends) and
  * logs one line per finished run: runs done/total (how many reused), elapsed time and an
    estimate of the time left, then the run and its AUC / eAUC;
  * writes WORK/status.json (atomically) after each run and when the study ends, which
    `python -m experiments.paper --status --work_dir=WORK` (or --report_dir) prints
    (`format_status`), also from another terminal while the study runs;
  * writes each run's hyperparameters and final metrics for TensorBoard's HParams dashboard
    (tensorboard.plugins.hparams, summary v2): the study's experiment (every hyperparameter
    and metric) in WORK/, and one session per run in the run's own tensorboard/ dir, beside the
    training curves Keras wrote there. `tensorboard --logdir=WORK` then lists every run with
    its variant, seed, days and knobs next to its AUC, eAUC, teacher AUC and training time.

The estimate: runs reused from an earlier study (their metrics.json predates this one) cost
nothing and are not counted as measured; the others' measured pace (elapsed time per run
trained, parallel workers included) times the runs left. Runs not started yet may still turn
out to be reused, so the estimate errs long.
"""

import dataclasses
import datetime
import glob
import os
import socket
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import logging

from data.plumbing import files
from data.plumbing.command import UserError

STATUS_FILE = "status.json"
HPARAMS_SUFFIX = ".pfd-hparams"  # our event files, replaced when a study runs again
# Final metrics shown in the HParams dashboard (as scalars `final/<name>`), when a run has them.
HPARAM_METRICS = ("auc", "eauc", "gauc", "logloss", "teacher_auc", "teacher_eauc",
                  "ceiling_auc", "ceiling_eauc", "recall@1000", "best_step", "stopped_step",
                  "train_seconds")


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """One run of the study as progress sees it."""
  label: str                  # for the log and the status file
  hparams: Dict[str, Any]     # bool / int / float / str values
  out_dir: str                # the run's output dir (metrics.json, tensorboard/)


def duration(seconds: Optional[float]) -> str:
  """1h02m, 14m05s, 42s; '?' when unknown."""
  if seconds is None:
    return "?"
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def plain_hparams(values: Dict[str, Any]) -> Dict[str, Any]:
  """HParams take bool, int, float or str: lists and tuples become comma-joined text, None
  becomes '-'."""
  out: Dict[str, Any] = {}
  for name, value in values.items():
    if isinstance(value, (list, tuple)):
      value = ",".join(map(str, value)) or "-"
    elif value is None:
      value = "-"
    elif not isinstance(value, (bool, int, float, str)):
      value = str(value)
    out[name] = value
  return out


class StudyProgress:
  """The `done(i, metrics)` callback of a study's runs; see the module docstring."""

  def __init__(self, runs: Sequence[RunInfo], work_dir: str, command: str = "",
               clock=time.time):
    self.runs, self.work_dir, self.command, self.clock = list(runs), work_dir, command, clock
    self.started = clock()
    self.finished: List[int] = []
    self.reused: List[int] = []
    self.last: Dict[str, Any] = {}
    os.makedirs(work_dir, exist_ok=True)
    self._write_status("running")
    self._write_experiment()

  # ---------------------------------------------------------------- the callback

  def done(self, i: int, metrics: Dict[str, Any]) -> None:
    run = self.runs[i]
    self.finished.append(i)
    if self._was_reused(run):
      self.reused.append(i)
    self.last = {"run": run.label, "auc": metrics.get("auc"), "eauc": metrics.get("eauc")}
    logging.info("[%s] %s: auc=%s eauc=%s", self.summary(), run.label,
                 _fmt(metrics.get("auc")), _fmt(metrics.get("eauc")))
    self._write_status("running")
    try:
      self._write_session(run, metrics)
    except Exception as error:  # noqa: BLE001 (a dashboard must not stop a study)
      logging.warning("HParams summary of %s not written: %s", run.label, error)

  def finish(self, state: str = "finished") -> None:
    """Records the study's end ('finished' or 'failed') in the status file."""
    self._write_status(state)

  # ---------------------------------------------------------------- figures

  def elapsed(self) -> float:
    return self.clock() - self.started

  def seconds_left(self) -> Optional[float]:
    """The runs left times the measured pace of the runs trained so far (None before the
    first one)."""
    trained = len(self.finished) - len(self.reused)
    if trained <= 0:
      return None
    return (len(self.runs) - len(self.finished)) * self.elapsed() / trained

  def summary(self) -> str:
    """'12/40 runs (3 reused), 14m05s elapsed, ~31m10s left'."""
    reused = f" ({len(self.reused)} reused)" if self.reused else ""
    left = self.seconds_left()
    tail = "done" if len(self.finished) == len(self.runs) else (
        f"~{duration(left)} left" if left is not None else "time left: after the first run")
    return (f"{len(self.finished)}/{len(self.runs)} runs{reused}, "
            f"{duration(self.elapsed())} elapsed, {tail}")

  def _was_reused(self, run: RunInfo) -> bool:
    """Whether the run's metrics.json was written before this study started."""
    path = os.path.join(run.out_dir, "metrics.json")
    return os.path.exists(path) and os.path.getmtime(path) < self.started

  # ---------------------------------------------------------------- files

  def _write_status(self, state: str) -> None:
    left = self.seconds_left()
    now = self.clock()
    files.write_json(os.path.join(self.work_dir, STATUS_FILE), {
        "state": state, "command": self.command, "pid": os.getpid(),
        "host": socket.gethostname(), "started": _iso(self.started), "updated": _iso(now),
        "runs_total": len(self.runs), "runs_done": len(self.finished),
        "runs_reused": len(self.reused), "elapsed_seconds": now - self.started,
        "seconds_left": None if state != "running" else left,
        "expected_end": _iso(now + left) if state == "running" and left is not None else None,
        "last": self.last, "summary": self.summary()})

  def _write_experiment(self) -> None:
    """The study's HParams experiment: every hyperparameter its runs have and the metrics."""
    from tensorboard.plugins.hparams import api as hp  # type: ignore[import-untyped]
    import tensorflow as tf
    names = sorted({name for run in self.runs for name in run.hparams})
    _remove_ours(self.work_dir)
    with tf.summary.create_file_writer(self.work_dir, filename_suffix=HPARAMS_SUFFIX).as_default():
      hp.hparams_config(hparams=[hp.HParam(name) for name in names],
                        metrics=[hp.Metric(f"final/{name}", display_name=name)
                                 for name in HPARAM_METRICS])

  def _write_session(self, run: RunInfo, metrics: Dict[str, Any]) -> None:
    """One HParams session in the run's tensorboard/ dir: its hyperparameters and final
    metrics (an earlier study's session there is replaced)."""
    from tensorboard.plugins.hparams import api as hp
    import tensorflow as tf
    logdir = os.path.join(run.out_dir, "tensorboard")
    os.makedirs(logdir, exist_ok=True)
    _remove_ours(logdir)
    with tf.summary.create_file_writer(logdir, filename_suffix=HPARAMS_SUFFIX).as_default():
      hp.hparams(plain_hparams(run.hparams), trial_id=run.label)
      for name in HPARAM_METRICS:
        value = metrics.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          tf.summary.scalar(f"final/{name}", float(value), step=0)


def _remove_ours(logdir: str) -> None:
  for path in glob.glob(os.path.join(logdir, f"events.out.tfevents.*{HPARAMS_SUFFIX}")):
    os.remove(path)


def _iso(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds).isoformat(timespec="seconds")


def _fmt(value: Optional[float]) -> str:
  return "-" if value is None else f"{value:.4f}"


# ------------------------------------------------------------------ reading it back


def read_status(work_dir: str) -> Dict[str, Any]:
  """WORK/status.json; a UserError naming the file when there is none."""
  path = os.path.join(work_dir, STATUS_FILE)
  if not os.path.exists(path):
    raise UserError(f"{path}: no study status here; a study writes it in its --work_dir "
                    "(default REPORT_DIR/work) as it runs")
  return files.read_json(path)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def format_status(status: Dict[str, Any]) -> str:
  """What `experiments.paper --status` prints: state, progress, time left, the last run."""
  state = status.get("state", "?")
  if (state == "running" and status.get("host") == socket.gethostname()
      and not _alive(int(status.get("pid", 0)))):
    state = f"stopped (process {status.get('pid')} is gone; rerun the command to resume)"
  lines = [f"study: {state}",
           f"  {status.get('runs_done')}/{status.get('runs_total')} runs done "
           f"({status.get('runs_reused')} reused), {duration(status.get('elapsed_seconds'))} "
           f"elapsed since {status.get('started')}"]
  if status.get("state") == "running":
    left = status.get("seconds_left")
    lines.append(f"  time left: ~{duration(left)} (about {status.get('expected_end')})"
                 if left is not None else "  time left: estimated after the first run trains")
  last = status.get("last") or {}
  if last:
    lines.append(f"  last: {last.get('run')} auc={_fmt(last.get('auc'))} "
                 f"eauc={_fmt(last.get('eauc'))}")
  lines.append(f"  updated {status.get('updated')}; command: {status.get('command')}")
  return "\n".join(lines)


def study_runs(trials: Sequence[Any], jobs: Sequence[Any]) -> List[RunInfo]:
  """RunInfo of each distinct run of a study: the trial's own columns (`Trial.row()`:
  study, stage, variant, seeds, days, world, settings) as hyperparameters, and the output dir
  of its job (experiments.jobs)."""
  runs = []
  for trial, job in zip(trials, jobs):
    fields = dict(trial.row())
    days = list(fields.pop("train_days"))
    fields["days"] = f"{days[0]}-{days[-1]}" if len(days) > 1 else str(days[0])
    fields["n_days"] = len(days)
    own = {k: v for k, v in fields.items()
           if k not in ("study", "stage", "variant", "seed", "world", "world_seed", "days",
                        "n_days")}
    label = (f"{trial.study} {trial.stage} {trial.variant} {trial.world} world seed "
             f"{trial.world_seed} seed {trial.seed} days {fields['days']}"
             + "".join(f" {k}={v}" for k, v in own.items()))
    runs.append(RunInfo(label, fields, job.task_class().output_dir(job.config)))
  return runs
