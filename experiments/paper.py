"""The paper's study, reproduced on the simulator: one command, one report.

    python -m experiments.paper --preset=small --seeds=3 --report_dir=R
    python -m experiments.paper --flagfile=experiments/configs/paper_small.cfg

--studies picks studies of the registry (`experiments.studies`; all but those run only when
named, by default):
  coarse      Table A: coarse CTR student and teacher AUC for every teacher kind, trained on
              --short_days and on every day before the eval day;
  cvr         Table B: fine CVR student and teacher AUC for the same kinds;
              both tables give gap closure (student - baseline) / (teacher - baseline);
  regime      (only when named) the CVR PFD and PFD+MD eAUC gain over training days x
              conversion sparsity x privileged-signal strength, on worlds it generates
              (experiments/configs/paper_regime.cfg);
  lambda      λ sweep for coarse pfd and for CVR pfd and lupi;
  cost        training cost of the schemes (independent then student, independent
              simultaneous, shared simultaneous, shared except user id) vs the student alone;
  online      simulated online A/B through the whole funnel: coarse baseline vs pfd_md
              (clicks) and CVR baseline vs pfd (conversions), via experiments.replay/compare;
  noise       CVR PFD's gain over baseline as the post-click signals get noisier (new worlds);
  unlabelled  (only when named) coarse pfd_md with and without distillation on
              retrieved-but-unshown items;
  teacher     (only when named) coarse pfd_md at --short_days taught by fine CTR of the same
              days and of every day before the eval day.
Every trial is a stage job (experiments.jobs) in its own model dir under --work_dir, run in a
long-lived trial worker (experiments.runner) and reused when its configuration is unchanged,
so an interrupted study resumes where it stopped; --workers runs independent trials at once
(bounded by memory, --max_worker_gb), each after the runs it reads; --runner=ray makes each
run a Ray task instead (one CPU and --max_worker_gb of Ray's memory each; data.plumbing.engine), on
every core of this machine or on a cluster, with the same receipts and numbers. Every trial
runs for each pair (world seed, training seed): --world_seeds worlds x --seeds seeds; every
figure is mean ± 95% CI (Student t) over those pairs, and every delta is paired on them.
Stage flags (--hidden_units, --batch_size, --epochs, --learning_rate ...) apply to every trial.

Watching it (experiments.progress): each finished run logs runs done/total, elapsed time and
the time left; WORK/status.json holds the same, printed by `python -m experiments.paper
--status --work_dir=WORK` (or --report_dir); `tensorboard --logdir=WORK` shows every run's
hyperparameters and final metrics in the HParams dashboard.
"""

import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from absl import flags
from absl import logging
import numpy as np
import pandas as pd

import data
from data.plumbing import command
from data.plumbing import engine as engine_lib
from data.plumbing import files
from experiments import jobs
from experiments import paper_learning
from experiments import paper_report
from experiments import paper_worlds
from experiments import progress
from experiments import reference
from experiments import runner
from experiments import studies as studies_lib
from experiments.paper_config import PaperConfig
from experiments.studies import LINEAR
from experiments.studies import Plan
from experiments.studies import Trial
from stages import catalogue
from stages import config as config_lib
from stages import driver

LEARNING_CURVE = paper_learning.LEARNING_CURVE  # kept whole in the frame, not in tables.csv
# Training settings each trial decides; every other TrainConfig field is a flag of the study.
NOT_FLAGS = ("world_dir", "model_dir", "train_days", "seed", "variant", "mode", "reuse")


# ----------------------------------------------------------------------------- running trials


def stage_job(trial: Trial, base: config_lib.TrainConfig, work_dir: str) -> jobs.Job:
  """The trial's job: its stage's config from `base`'s settings and the trial's own."""
  stage = catalogue.stage(trial.stage)
  settings: Dict[str, Any] = dict(
      world_dir=paper_worlds.world_path(work_dir, trial.world, trial.world_seed),
      model_dir=trial.model_dir(work_dir), train_days=tuple(trial.train_days), seed=trial.seed,
      variant=trial.variant, mode=None, reuse=True, eval_day=eval_day(trial, base),
      # Written out, so the job's command line names the batch it trains with.
      batch_size=base.batch_size or stage.batch_size)
  if trial.variant == LINEAR:  # the reference's own epochs bound (validation stopping ends it)
    settings.update(variant="baseline", epochs=reference.REFERENCE_EPOCHS)
  settings.update(trial.settings)
  teacher = trial.teacher_trial()
  if teacher is not None:
    settings["teacher_model_dir"] = teacher.model_dir(work_dir)
  return jobs.Job(stage.make_config(base, **settings), reference=trial.variant == LINEAR)


def eval_day(trial: Trial, base: config_lib.TrainConfig) -> int:
  """The trial's eval day: the main world's, or the last day of a world with its own n_days."""
  knobs = paper_worlds.name_knobs(trial.world)
  return int(knobs["n_days"]) if "n_days" in knobs else int(base.eval_day or 0)


def distinct_runs(trials: Sequence[Trial]) -> Tuple[List[Trial], List[int]]:
  """(each run once, in first-declared order; for every trial, the index of its run)."""
  index: Dict[Tuple[str, str, str], int] = {}
  runs: List[Trial] = []
  for trial in trials:
    if trial.run_key() not in index:
      index[trial.run_key()] = len(runs)
      runs.append(trial)
  return runs, [index[t.run_key()] for t in trials]


def run_dependencies(runs: Sequence[Trial]) -> List[List[int]]:
  """For each run, the runs it waits for: those in its model dir of the stages it reads
  (`catalogue.Stage.reads`), and a teacher trained in another dir (`Trial.teacher_trial`)."""
  by_dir: Dict[str, List[int]] = {}
  by_key = {run.run_key(): i for i, run in enumerate(runs)}
  for i, run in enumerate(runs):
    by_dir.setdefault(run.model_dir(""), []).append(i)
  dependencies = []
  for run in runs:
    reads = catalogue.stage(run.stage).reads
    waits = [j for j in by_dir[run.model_dir("")] if runs[j].stage in reads]
    teacher = run.teacher_trial()
    if teacher is not None:  # its teacher is trained in another model dir
      if teacher.run_key() not in by_key:
        raise ValueError(f"{run} reads a fine CTR run that the study does not declare")
      waits.append(by_key[teacher.run_key()])
    dependencies.append(waits)
  return dependencies


def run_trials(trials: Sequence[Trial], base: config_lib.TrainConfig, work_dir: str,
               workers: int = 1, max_worker_gb: float = 0.0,
               engine: Optional[engine_lib.Engine] = None) -> pd.DataFrame:
  """Runs (or reuses) every distinct run, `workers` at a time (or as `engine`'s tasks); one
  row of metrics per trial, in the declared order whatever order the runs finish in."""
  runs, run_of = distinct_runs(trials)
  stage_jobs = [stage_job(run, base, work_dir) for run in runs]
  watch = progress.StudyProgress(progress.study_runs(runs, stage_jobs), work_dir,
                                 " ".join(["python -m experiments.paper"] + sys.argv[1:]))
  try:
    results = runner.run_stages(stage_jobs, run_dependencies(runs), workers=workers,
                                max_worker_gb=max_worker_gb, done=watch.done, engine=engine,
                                log_dir=os.path.join(work_dir, "logs"))
  except BaseException:
    watch.finish("failed")
    raise
  watch.finish()
  rows = []
  for trial, i in zip(trials, run_of):
    linear_metrics = reference_metrics(stage_jobs[i].config)
    world_knobs = {k: float(v) for k, v in paper_worlds.name_knobs(trial.world).items()}
    # The trial's own fields win over the metrics' copies (seed stays an integer).
    rows.append({**_numeric(results[i]), **trial.row(), **world_knobs, **linear_metrics,
                 LEARNING_CURVE: results[i].get(LEARNING_CURVE) or []})
  frame = pd.DataFrame(rows)
  frame["days"] = frame["train_days"].map(_days)
  return frame


def reference_metrics(config: config_lib.TrainConfig) -> Dict[str, float]:
  """The linear reference's auc and eauc on the run's eval rows, as reference_auc and
  reference_eauc, when MODEL_DIR/reference/<stage>/metrics.json exists ({} otherwise): where
  `python -m experiments.reference --stage=<stage> --model_dir=MODEL_DIR` writes it."""
  path = os.path.join(config.model_dir, reference.REFERENCE_DIR, config.stage, "metrics.json")
  if not os.path.exists(path):
    return {}
  metrics = _numeric(files.read_json(path))
  return {f"reference_{k}": metrics[k] for k in ("auc", "eauc") if k in metrics}


def _numeric(metrics: Dict[str, Any]) -> Dict[str, float]:
  """A run's numeric figures, by name: the same columns in the same order whichever runner
  (this process, a trial worker, Ray) returned them."""
  return {k: float(v) for k, v in sorted(metrics.items())
          if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}


def _days(days: Iterable[int]) -> str:
  days = list(days)
  return f"{days[0]}-{days[-1]}" if len(days) > 1 else str(days[0])




# ----------------------------------------------------------------------------- the command


def paper_work_dir(paper: PaperConfig) -> str:
  return paper.work_dir or os.path.join(paper.report_dir or ".", "work")


def ensure_worlds(paper: PaperConfig, work_dir: str, trials: Sequence[Trial],
                  main_knobs: Dict[str, str]) -> None:
  """Generates every world the trials read, each on its study's base knobs (the regime
  map's --regime_world_flagfile, else --world_flagfile's)."""
  needed = sorted({(t.world, t.world_seed, t.study) for t in trials})
  for name, world_seed, study in needed:
    flagfile = studies_lib.get(study).world_knobs(paper)
    knobs = main_knobs if flagfile is None else paper_worlds.read_flagfile(flagfile)
    paper_worlds.ensure_world(paper.preset, work_dir, name, world_seed, knobs)


def world_seeds(paper: PaperConfig) -> List[int]:
  """The study's world seeds: --world_seeds of them from --first_world_seed."""
  return list(range(paper.first_world_seed, paper.first_world_seed + paper.world_seeds))


def declared_trials(paper: PaperConfig, days: Sequence[int]) -> List[Trial]:
  """Every trial of the chosen studies, world seed by world seed."""
  seeds = list(range(paper.seeds))
  return [trial for study in studies_lib.selected(list(paper.studies))
          for world_seed in world_seeds(paper)
          for trial in study.trials(Plan(paper, days, seeds, world_seed))]


def study(paper: PaperConfig, training: config_lib.TrainConfig,
          engine: Optional[engine_lib.Engine] = None) -> str:
  """Runs the chosen studies; returns the report's path. `training` holds the settings every
  trial shares, on the main world (paper_worlds.world_path(work_dir, 'main')) with
  model_dir=work_dir. `engine` runs the trials and the online study's replay chunks (default:
  --workers threads here)."""
  if paper.seeds * paper.world_seeds < 2:
    logging.warning("one (world seed, seed) pair: confidence intervals need at least 2")
  work_dir = paper_work_dir(paper)
  main_knobs = paper_worlds.read_flagfile(paper.world_flagfile)
  first = paper_worlds.ensure_world(paper.preset, work_dir, paper_worlds.MAIN,
                                    paper.first_world_seed, main_knobs)
  world = data.open_world(first)
  base = driver.resolve(training, world)
  trials = declared_trials(paper, world.days)
  ensure_worlds(paper, work_dir, trials, main_knobs)
  logging.info("paper study: %d trials over %d world seeds x %d seeds, studies %s, %s",
               len(trials), paper.world_seeds, paper.seeds, list(paper.studies),
               f"{paper.workers} workers" if engine is None or engine.is_local
               else f"Ray tasks on {engine.parallelism()} CPUs")
  frame = run_trials(trials, base, work_dir, paper.workers, paper.max_worker_gb, engine)
  extras: Dict[str, Any] = {}
  for chosen in studies_lib.selected(list(paper.studies)):
    extras.update(chosen.follow_up(paper, world.days, list(range(paper.seeds)), work_dir,
                                   engine))
  command_line = " ".join(["python -m experiments.paper"] + sys.argv[1:])
  return paper_report.write(frame, extras, paper.report_dir or ".", command=command_line,
                            studies=list(paper.studies))


def main() -> None:
  if flags.FLAGS.status:  # a running (or finished) study's progress, from its status file
    work_dir = flags.FLAGS.work_dir or os.path.join(flags.FLAGS.report_dir or "", "work")
    print(progress.format_status(progress.read_status(work_dir)))
    return
  paper = command.config_from_flags(PaperConfig)
  work_dir = paper_work_dir(paper)
  training = config_lib.from_flags(config_lib.TrainConfig,
                                   world_dir=paper_worlds.world_path(work_dir, paper_worlds.MAIN),
                                   model_dir=work_dir)
  with engine_lib.Engine(command.config_from_flags(engine_lib.EngineConfig)) as engine:
    print(f"report: {study(paper, training, engine)}")


def run() -> None:
  flags.DEFINE_bool("status", False, "Print the progress of the study in --work_dir (or "
                    "--report_dir/work) from its status.json, and exit.")
  command.define_config_flags(PaperConfig)
  command.define_config_flags(engine_lib.EngineConfig)
  config_lib.define_flags(config_lib.TrainConfig, skip=NOT_FLAGS)
  command.start(command.run_command(main, "experiments.paper"))


if __name__ == "__main__":
  run()
