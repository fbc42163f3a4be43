"""The paper's study, reproduced on the simulator: one command, one report.

    python -m experiments.paper --preset=small --seeds=3 --report_dir=R
    python -m experiments.paper --flagfile=experiments/configs/paper_small.cfg

Studies (--studies picks some; all by default, `unlabelled` only when named):
  coarse      Table A: coarse CTR student and teacher AUC for baseline, lupi, md, pfd, pfd_md,
              trained on --short_days and on every day before the eval day;
  cvr         Table B: fine CVR student and teacher AUC for the same variants;
              both tables give gap closure (student - baseline) / (teacher - baseline);
  lambda      λ sweep for coarse pfd and for CVR pfd and lupi;
  cost        training cost of the schemes (independent then student, independent
              simultaneous, shared simultaneous, shared except user id) vs the student alone;
  online      simulated online A/B through the whole funnel: coarse baseline vs pfd_md
              (clicks) and CVR baseline vs pfd (conversions), via experiments.replay/compare;
  noise       CVR PFD's gain over baseline as the post-click signals get noisier (new worlds);
  unlabelled  coarse pfd_md with and without distillation on retrieved-but-unshown items;
  regime      (only when named) the CVR PFD and PFD+MD eAUC gain over training days x
              conversion sparsity x privileged-signal strength, on worlds it generates
              (experiments/configs/paper_regime.cfg).
Every trial is a stage command run in its own process (experiments.runner) and its own model
dir under --work_dir, reused when its configuration is unchanged, so an interrupted study
resumes where it stopped; --workers runs independent trials at once (bounded by memory,
--max_worker_gb), each after the runs it reads; --runner=ray makes each run a Ray task instead
(one CPU and --max_worker_gb of Ray's memory each; data.engine), on every core of this machine
or on a cluster, with the same receipts and numbers. Every trial runs for each pair (world seed,
training seed): --world_seeds worlds x --seeds seeds; every figure is mean ± 95% CI (Student t)
over those pairs, and every delta is paired on them. Stage flags (--hidden_units,
--batch_size, --epochs, --learning_rate ...) apply to every trial.

Watching it (experiments.progress): each finished run logs runs done/total, elapsed time and
the time left; WORK/status.json holds the same, printed by `python -m experiments.paper
--status --work_dir=WORK` (or --report_dir); `tensorboard --logdir=WORK` shows every run's
hyperparameters and final metrics in the HParams dashboard.
"""

import dataclasses
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from absl import flags
from absl import logging
import numpy as np
import pandas as pd

import data
from data import command
from data import config as world_config
from data import engine as engine_lib
from data import files
from experiments import compare
from experiments import paper_learning
from experiments import paper_report
from experiments import paper_worlds
from experiments import progress
from experiments import reference
from experiments import replay
from experiments import runner
from models import distillation
from stages import config as config_lib
from stages import driver

STUDIES = ("coarse", "cvr", "lambda", "cost", "online", "noise", "unlabelled", "regime",
           "teacher")
ONLY_WHEN_NAMED = ("unlabelled", "regime", "teacher")
# A coarse pfd_md trial's knob: its fine CTR teacher trained on this many days (from the first),
# in that run's own model dir, instead of the student's days.
TEACHER_DAYS = "teacher_days"
VARIANTS = distillation.TEACHER_KINDS
LINEAR = "reference"  # a trial of the stage's linear reference (experiments.reference)
LEARNING_CURVE = paper_learning.LEARNING_CURVE  # kept whole in the frame, not in tables.csv
# Training settings each trial decides; every other TrainConfig field is a flag of the study.
NOT_FLAGS = ("world_dir", "model_dir", "train_days", "seed", "variant", "mode", "reuse")
CONFIGS = {"retrieval": config_lib.RetrievalConfig, "fine_ctr": config_lib.FineConfig,
           "fine_cvr": config_lib.FineConfig, "coarse": config_lib.CoarseConfig}
TASK = {"fine_ctr": {"task": "ctr"}, "fine_cvr": {"task": "cvr"}}


def _field(default: Any, help_text: str, **metadata: Any) -> Any:
  if isinstance(default, tuple):
    return dataclasses.field(default_factory=lambda: default,
                             metadata={"help": help_text, **metadata})
  return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


@dataclasses.dataclass(frozen=True)
class PaperConfig:
  """The study's own settings (the training ones are `stages.config.TrainConfig`'s)."""
  report_dir: Optional[str] = _field(None, "Where report.md, tables.csv and plots/ go.")
  preset: str = _field("small", "The worlds' preset.", choices=sorted(world_config.PRESETS))
  seeds: int = _field(6, "Training seeds per configuration and world (0 .. seeds-1).")
  world_seeds: int = _field(2, "World seeds (0 .. world_seeds-1): every trial runs on each; "
                            "pairs (world seed, training seed) are the units of every CI.")
  studies: Tuple[str, ...] = _field(tuple(s for s in STUDIES if s not in ONLY_WHEN_NAMED),
                                    f"Which studies to run, of {', '.join(STUDIES)}.")
  workers: int = _field(1, "Trials run at once, each in its own process (--runner=local; "
                        "with --runner=ray, Ray runs one per CPU it has).")
  max_worker_gb: float = _field(4.0, "Memory one trial may need: fewer workers than --workers "
                                "when the machine has less available, and none started while "
                                "less than this is available (0: no check).")
  world_flagfile: str = _field("", "data.generate flagfile of the main and noise worlds' knobs "
                               "(e.g. experiments/configs/world_taobao.cfg; empty: the preset).")
  work_dir: Optional[str] = _field(None, "Worlds, models and replays (default "
                                   "REPORT_DIR/work).")
  variants: Tuple[str, ...] = _field(VARIANTS, "Distillation variants of Tables A and B "
                                     "(baseline is always run: every delta is against it).")
  coarse_columns: Tuple[str, ...] = _field(("short", "long"), "Table A's training-days "
                                           "columns: short (--short_days) and/or long (every "
                                           "day before the eval day).")
  linear_reference: bool = _field(True, "Also train the linear reference (experiments."
                                  "reference) beside each baseline of Tables A and B, so the "
                                  "report shows ceiling, linear model and DNN side by side.")
  short_days: int = _field(1, "Training days of the short-data column of Table A.")
  lambdas: Tuple[str, ...] = _field(("0.1", "0.3", "0.5", "0.7", "0.9"),
                                    "λ values of the sweep.")
  noise_levels: Tuple[str, ...] = _field(("0.25", "0.5", "1", "2", "4"), "post_click_noise "
                                         "values of the noise sweep (one world each).")
  paper_funnel: str = _field("retrieval:1000,coarse:100,fine:10",
                             "Funnel of the online study's replays.")
  online_max_requests: int = _field(0, "Replay at most this many requests per run in the "
                                    "online study (0: the whole day).")
  regime_days: Tuple[str, ...] = _field(("1", "3", "7"), "Training days of the regime map "
                                        "(the first N; capped at the days before the eval day).")
  regime_conversion_biases: Tuple[str, ...] = _field(
      ("-4.5", "-6.5", "-8.8"), "conversion_bias of the regime map's worlds (sparsity).")
  regime_strength_knob: str = _field("purchase_intent_sd", "World knob of the privileged "
                                     "signal's strength in the regime map.")
  regime_strengths: Tuple[str, ...] = _field(("0", "1", "2"), "Values of "
                                             "--regime_strength_knob in the regime map.")
  regime_world_flagfile: str = _field("experiments/configs/world_taobao.cfg", "data.generate "
                                      "flagfile of the regime worlds' other knobs.")

  def __post_init__(self):
    if not self.coarse_columns or set(self.coarse_columns) - {"short", "long"}:
      raise command.UserError(f"--coarse_columns must be short and/or long; got "
                              f"{list(self.coarse_columns)}")
    unknown_variants = [v for v in self.variants if v not in VARIANTS]
    if unknown_variants:
      raise command.UserError(f"--variants must be of {', '.join(VARIANTS)}; got unknown "
                              f"{unknown_variants}")
    unknown = [s for s in self.studies if s not in STUDIES]
    if unknown:
      raise command.UserError(f"--studies must be of {', '.join(STUDIES)}; got unknown "
                              f"{unknown}")
    if not self.report_dir:
      raise command.UserError("--report_dir is required")
    if self.seeds < 1 or self.world_seeds < 1 or self.workers < 1:
      raise command.UserError("--seeds, --world_seeds and --workers must be at least 1")
    for name in ("lambdas", "noise_levels", "regime_days", "regime_conversion_biases",
                 "regime_strengths"):
      for value in getattr(self, name):
        try:
          float(value)
        except ValueError:
          raise command.UserError(f"--{name}: {value!r} is not a number") from None


@dataclasses.dataclass(frozen=True)
class Trial:
  """One stage run of the study: what to train, on which world and days, with which knobs."""
  study: str
  stage: str
  variant: str
  seed: int
  train_days: Tuple[int, ...]
  world: str = paper_worlds.MAIN  # or e.g. "noise=2" (paper_worlds names worlds by knobs)
  knobs: Tuple[Tuple[str, Any], ...] = ()  # stage config fields that differ
  world_seed: int = 0

  def model_dir(self, work_dir: str) -> str:
    """Trials that can share models (a pfd_md student and its fine CTR teacher) share a dir."""
    days = f"days{self.train_days[0]}-{self.train_days[-1]}"
    knobs = "_".join(f"{k}={_short(v)}" for k, v in self.knobs) or "default"
    return os.path.join(work_dir, "models", paper_worlds.world_key(self.world, self.world_seed),
                        days, f"seed{self.seed}", knobs)

  def run_key(self) -> Tuple[str, str, str]:
    """Trials with one key are one run (studies may declare the same run)."""
    return (self.model_dir(""), self.stage, self.variant)


def _short(value) -> str:
  if isinstance(value, (list, tuple)):
    return "+".join(map(str, value)) or "none"
  return str(value)


# ----------------------------------------------------------------------------- declared studies


def study_trials(paper: PaperConfig, study: str, days: Sequence[int], seeds: Sequence[int],
                 world_seed: int = 0) -> List[Trial]:
  """The trials one study needs on the worlds of `world_seed`, declared (the order respects
  dependencies)."""
  long_days = tuple(days[:-1])
  short_days = tuple(days[:paper.short_days])
  variants = [v for v in VARIANTS if v == "baseline" or v in paper.variants]
  if paper.linear_reference:
    variants.append(LINEAR)
  columns = {"short": short_days, "long": long_days}
  trials: List[Trial] = []
  for seed in seeds:
    if study == "coarse":
      for train_days in sorted({columns[c] for c in paper.coarse_columns}, key=len):
        trials.append(Trial(study, "fine_ctr", "baseline", seed, train_days))
        trials += [Trial(study, "coarse", v, seed, train_days) for v in variants]
    elif study == "cvr":
      trials.append(Trial(study, "fine_ctr", "baseline", seed, long_days))
      trials += [Trial(study, "fine_cvr", v, seed, long_days) for v in variants]
    elif study == "lambda":
      for lam in (float(x) for x in paper.lambdas):
        knobs = (("distill_lambda", lam),)
        trials += [Trial(study, "coarse", "pfd", seed, long_days, knobs=knobs),
                   Trial(study, "fine_cvr", "pfd", seed, long_days, knobs=knobs),
                   Trial(study, "fine_cvr", "lupi", seed, long_days, knobs=knobs)]
    elif study == "cost":
      trials += cost_trials(seed, short_days)
    elif study == "online":
      trials += [Trial(study, "retrieval", "baseline", seed, long_days),
                 Trial(study, "fine_ctr", "baseline", seed, long_days)]
      trials += [Trial(study, "fine_cvr", v, seed, long_days) for v in ("baseline", "pfd")]
      trials += [Trial(study, "coarse", v, seed, long_days) for v in ("baseline", "pfd_md")]
    elif study == "noise":
      for noise in paper.noise_levels:
        trials += [Trial(study, "fine_cvr", v, seed, long_days, world=f"noise={noise}")
                   for v in ("baseline", "pfd")]
    elif study == "unlabelled":
      # The unlabelled run's dir needs its own retrieval model (it picks the candidates) and
      # fine CTR teacher; the stages ignore the knob they do not use.
      unlabelled = (("distill_unlabelled", True),)
      trials += [Trial(study, "fine_ctr", "baseline", seed, long_days),
                 Trial(study, "coarse", "pfd_md", seed, long_days),
                 Trial(study, "retrieval", "baseline", seed, long_days, knobs=unlabelled),
                 Trial(study, "fine_ctr", "baseline", seed, long_days, knobs=unlabelled),
                 Trial(study, "coarse", "pfd_md", seed, long_days, knobs=unlabelled)]
    elif study == "regime":
      trials += regime_trials(paper, days, seed)
    elif study == "teacher":
      # Coarse PFD+MD on the short days, taught by the fine CTR model of the same days and by
      # one trained on every day before the eval day (as a production fine ranker would be).
      long_teacher = ((TEACHER_DAYS, len(long_days)),)
      trials += [Trial(study, "fine_ctr", "baseline", seed, short_days),
                 Trial(study, "fine_ctr", "baseline", seed, long_days),
                 Trial(study, "coarse", "baseline", seed, short_days),
                 Trial(study, "coarse", "pfd_md", seed, short_days),
                 Trial(study, "coarse", "pfd_md", seed, short_days, knobs=long_teacher)]
  return [dataclasses.replace(t, world_seed=world_seed) for t in trials]


REGIME_VARIANTS = ("baseline", "pfd", "pfd_md")


def regime_worlds(paper: PaperConfig) -> List[str]:
  """The regime map's worlds: one per (conversion_bias, strength), named by those knobs."""
  return [paper_worlds.world_name([("conversion_bias", bias),
                                   (paper.regime_strength_knob, strength)])
          for bias in paper.regime_conversion_biases for strength in paper.regime_strengths]


def regime_day_counts(paper: PaperConfig, days: Sequence[int]) -> List[int]:
  """--regime_days, capped at the days before the eval day (the last day), without repeats."""
  return sorted({min(int(n), len(days) - 1) for n in paper.regime_days})


def regime_trials(paper: PaperConfig, days: Sequence[int], seed: int) -> List[Trial]:
  """CVR baseline, PFD and PFD+MD on each regime world, for each training-days count."""
  return [Trial("regime", "fine_cvr", variant, seed, tuple(days[:n]), world=world)
          for world in regime_worlds(paper) for n in regime_day_counts(paper, days)
          for variant in REGIME_VARIANTS]


# The paper's training-cost schemes, as knobs of a coarse pfd run; "student alone" is baseline.
COST_SCHEMES = {
    "student alone": ("baseline", ()),
    "independent teacher, then student": ("pfd", (("mode", "pretrained"),)),
    "independent, simultaneous": ("pfd", (("share_embeddings", False),)),
    "shared, simultaneous": ("pfd", (("unshared_features", ()),)),
    "shared except user id, simultaneous": ("pfd", (("unshared_features", ("user_id",)),)),
}


def cost_trials(seed: int, short_days: Tuple[int, ...]) -> List[Trial]:
  return [Trial("cost", "coarse", variant, seed, short_days, knobs=knobs + (("scheme", name),))
          for name, (variant, knobs) in COST_SCHEMES.items()]


# ----------------------------------------------------------------------------- running trials


# Runs a trial reads, by stage: a run waits for the runs of earlier ranks in its model dir (the
# fine CTR export teaches coarse pfd_md and scores CVR's CTCVR; retrieval picks the coarse
# unlabelled candidates).
STAGE_RANK = {"retrieval": 0, "fine_ctr": 1, "fine_cvr": 2, "coarse": 2}


def stage_config(trial: Trial, base: config_lib.TrainConfig,
                 work_dir: str) -> config_lib.TrainConfig:
  """The trial's stage config: `base`'s settings, the trial's, and the knobs its stage has."""
  settings: Dict[str, Any] = dict(
      world_dir=paper_worlds.world_path(work_dir, trial.world, trial.world_seed),
      model_dir=trial.model_dir(work_dir), train_days=tuple(trial.train_days), seed=trial.seed,
      variant=trial.variant, mode=None, reuse=True, **TASK.get(trial.stage, {}),
      # Written out, so a child's command line names the batch it trains with.
      batch_size=base.batch_size or config_lib.default_batch_size(trial.stage))
  if trial.variant == LINEAR:  # the reference's own epochs bound (validation stopping ends it)
    settings.update(variant="baseline", epochs=reference.REFERENCE_EPOCHS)
  settings.update((k, v) for k, v in trial.knobs if k not in ("scheme", TEACHER_DAYS))
  teacher = teacher_trial(trial)
  if teacher is not None:
    settings["teacher_model_dir"] = teacher.model_dir(work_dir)
  return config_lib.for_stage(CONFIGS[trial.stage], base, **settings)


def teacher_trial(trial: Trial) -> Optional[Trial]:
  """The fine CTR run whose export teaches a trial with a teacher_days knob (None without)."""
  knobs = dict(trial.knobs)
  if TEACHER_DAYS not in knobs:
    return None
  first = trial.train_days[0]
  return Trial(trial.study, "fine_ctr", "baseline", trial.seed,
               tuple(range(first, first + int(knobs[TEACHER_DAYS]))), world=trial.world,
               world_seed=trial.world_seed)


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
  """For each run, the runs it waits for: those of an earlier stage rank in its model dir, and
  a teacher trained in another (`teacher_trial`)."""
  by_dir: Dict[str, List[int]] = {}
  by_key = {run.run_key(): i for i, run in enumerate(runs)}
  for i, run in enumerate(runs):
    by_dir.setdefault(run.model_dir(""), []).append(i)
  dependencies = []
  for run in runs:
    waits = [j for j in by_dir[run.model_dir("")]
             if STAGE_RANK[runs[j].stage] < STAGE_RANK[run.stage]]
    teacher = teacher_trial(run)
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
  configs = [stage_config(run, base, work_dir) for run in runs]
  tasks = [reference.reference_task(runner.TASKS[type(c)]) if run.variant == LINEAR else None
           for run, c in zip(runs, configs)]
  watch = progress.StudyProgress(progress.study_runs(runs, configs, tasks), work_dir,
                                 " ".join(["python -m experiments.paper"] + sys.argv[1:]))
  try:
    results = runner.run_stages(configs, run_dependencies(runs), workers=workers,
                                max_worker_gb=max_worker_gb, done=watch.done, tasks=tasks,
                                engine=engine)
  except BaseException:
    watch.finish("failed")
    raise
  watch.finish()
  rows = []
  for trial, i in zip(trials, run_of):
    linear_metrics = reference_metrics(configs[i])
    world_knobs = {k: float(v) for k, v in paper_worlds.name_knobs(trial.world).items()}
    # The trial's own fields win over the metrics' copies (seed stays an integer).
    rows.append({**_numeric(results[i]), **dataclasses.asdict(trial), **dict(trial.knobs),
                 **world_knobs, **linear_metrics,
                 LEARNING_CURVE: results[i].get(LEARNING_CURVE) or []})
  frame = pd.DataFrame(rows)
  frame["days"] = frame["train_days"].map(_days)
  return frame


def reference_metrics(config: config_lib.TrainConfig) -> Dict[str, float]:
  """The linear reference's auc and eauc on the run's eval rows, as reference_auc and
  reference_eauc, when MODEL_DIR/reference/<stage>/metrics.json exists ({} otherwise): where
  `python -m experiments.reference --stage=<stage> --model_dir=MODEL_DIR` writes it."""
  path = os.path.join(config.model_dir, "reference", config.stage, "metrics.json")
  if not os.path.exists(path):
    return {}
  metrics = _numeric(files.read_json(path))
  return {f"reference_{k}": metrics[k] for k in ("auc", "eauc") if k in metrics}


def _numeric(metrics: Dict[str, Any]) -> Dict[str, float]:
  return {k: float(v) for k, v in metrics.items()
          if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}


def _days(days: Iterable[int]) -> str:
  days = list(days)
  return f"{days[0]}-{days[-1]}" if len(days) > 1 else str(days[0])




# ----------------------------------------------------------------------------- online A/B


def online_study(paper: PaperConfig, frame_days: Sequence[int], seeds: Sequence[int],
                 work_dir: str, engine: Optional[engine_lib.Engine] = None) -> Dict[str, str]:
  """Replays the eval day through three funnels per seed and compares them with compare.

  Returns {comparison name: path of its report.md}. On the world of world seed 0 only:
  compare pairs replays by training seed.
  """
  day = frame_days[-1]
  long_days = tuple(frame_days[:-1])
  funnels = {"baseline": ("baseline", "baseline"), "coarse_pfd_md": ("pfd_md", "baseline"),
             "cvr_pfd": ("baseline", "pfd")}
  runs: Dict[str, List[str]] = {name: [] for name in funnels}
  world = None
  for seed in seeds:
    trial = Trial("online", "coarse", "baseline", seed, long_days)
    for name, (coarse_variant, cvr_variant) in funnels.items():
      run_dir = os.path.join(work_dir, "replays", f"{name}_seed{seed}")
      world_dir = paper_worlds.world_path(work_dir, paper_worlds.MAIN)
      world = world or data.load(world_dir, verify="size")
      config = replay.ReplayConfig(
          world_dir=world_dir, model_dir=trial.model_dir(work_dir),
          run_dir=run_dir, day=day, coarse_variant=coarse_variant, cvr_variant=cvr_variant,
          label=name, seed=seed, max_requests=paper.online_max_requests, cascade_sample=500,
          oracle_cache_dir=os.path.join(work_dir, "oracle_cache"))
      if not os.path.exists(os.path.join(run_dir, replay.SUMMARY)):
        replay.replay(world, replay.parse_funnel(paper.paper_funnel), config, engine)
      runs[name].append(run_dir)
  reports = {}
  for name in ("coarse_pfd_md", "cvr_pfd"):
    out = os.path.join(paper.report_dir, "online", name)
    reports[name] = compare.compare(runs["baseline"] + runs[name], out, baseline="baseline")
  return reports


# ----------------------------------------------------------------------------- the command


def paper_work_dir(paper: PaperConfig) -> str:
  return paper.work_dir or os.path.join(paper.report_dir, "work")


def ensure_worlds(paper: PaperConfig, work_dir: str, trials: Sequence[Trial],
                  main_knobs: Dict[str, str]) -> None:
  """Generates every world the trials read (regime worlds on --regime_world_flagfile's knobs,
  the others on --world_flagfile's)."""
  regime_knobs = paper_worlds.read_flagfile(paper.regime_world_flagfile) if any(
      t.study == "regime" for t in trials) else {}
  for name, world_seed, is_regime in sorted({(t.world, t.world_seed, t.study == "regime")
                                              for t in trials}):
    paper_worlds.ensure_world(paper.preset, work_dir, name, world_seed,
                              regime_knobs if is_regime else main_knobs)


def study(paper: PaperConfig, training: config_lib.TrainConfig,
          engine: Optional[engine_lib.Engine] = None) -> str:
  """Runs the chosen studies; returns the report's path. `training` holds the settings every
  trial shares, on the main world (paper_worlds.world_path(work_dir, 'main')) with
  model_dir=work_dir. `engine` runs the trials and the online study's replay chunks (default:
  --workers threads here)."""
  if paper.seeds * paper.world_seeds < 2:
    logging.warning("one (world seed, seed) pair: confidence intervals need at least 2")
  work_dir = paper_work_dir(paper)
  seeds = list(range(paper.seeds))
  main_knobs = paper_worlds.read_flagfile(paper.world_flagfile)
  paper_worlds.ensure_world(paper.preset, work_dir, paper_worlds.MAIN, 0, main_knobs)
  world = driver.open_world(training)
  base = driver.resolve(training, world)
  days = world.days
  trials = [t for name in paper.studies for world_seed in range(paper.world_seeds)
            for t in study_trials(paper, name, days, seeds, world_seed)
            if t.study != "online" or world_seed == 0]
  ensure_worlds(paper, work_dir, trials, main_knobs)
  logging.info("paper study: %d trials over %d world seeds x %d seeds, studies %s, %s",
               len(trials), paper.world_seeds, len(seeds), list(paper.studies),
               f"{paper.workers} workers" if engine is None or engine.is_local
               else f"Ray tasks on {engine.parallelism()} CPUs")
  frame = run_trials(trials, base, work_dir, paper.workers, paper.max_worker_gb, engine)
  online = (online_study(paper, days, seeds, work_dir, engine) if "online" in paper.studies
            else {})
  command_line = " ".join(["python -m experiments.paper"] + sys.argv[1:])
  return paper_report.write(frame, online, paper.report_dir, command=command_line,
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
