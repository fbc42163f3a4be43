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
  unlabelled  coarse pfd_md with and without distillation on retrieved-but-unshown items.
Every trial is a stage command run in its own process (experiments.runner) and its own model
dir under --work_dir, reused when its configuration is unchanged (--reuse), so an interrupted
study resumes where it stopped. Every figure
is mean ± 95% CI (Student t) over --seeds seeds. Stage flags (--hidden_units, --batch_size,
--epochs, --learning_rate ...) apply to every trial.
"""

import dataclasses
import os
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import pandas as pd

import data
from data import command
from data import config as world_config
from data import generate
from experiments import compare
from experiments import paper_report
from experiments import replay
from experiments import runner
from models import distillation
from stages import config as config_lib
from stages import driver

STUDIES = ("coarse", "cvr", "lambda", "cost", "online", "noise", "unlabelled")
VARIANTS = distillation.TEACHER_KINDS
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
  seeds: int = _field(3, "Seeds per configuration (0 .. seeds-1).")
  studies: Tuple[str, ...] = _field(tuple(s for s in STUDIES if s != "unlabelled"),
                                    f"Which studies to run, of {', '.join(STUDIES)}.")
  work_dir: Optional[str] = _field(None, "Worlds, models and replays (default "
                                   "REPORT_DIR/work).")
  short_days: int = _field(1, "Training days of the short-data column of Table A.")
  lambdas: Tuple[str, ...] = _field(("0.1", "0.3", "0.5", "0.7", "0.9"),
                                    "λ values of the sweep.")
  noise_levels: Tuple[str, ...] = _field(("0.25", "0.5", "1", "2", "4"), "post_click_noise "
                                         "values of the noise sweep (one world each).")
  paper_funnel: str = _field("retrieval:1000,coarse:100,fine:10",
                             "Funnel of the online study's replays.")
  online_max_requests: int = _field(0, "Replay at most this many requests per run in the "
                                    "online study (0: the whole day).")

  def __post_init__(self):
    unknown = [s for s in self.studies if s not in STUDIES]
    if unknown:
      raise command.UserError(f"--studies must be of {', '.join(STUDIES)}; got unknown "
                              f"{unknown}")
    if not self.report_dir:
      raise command.UserError("--report_dir is required")
    for name in ("lambdas", "noise_levels"):
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
  world: str = "main"  # or e.g. "noise=2" for the noise sweep's worlds
  knobs: Tuple[Tuple[str, Any], ...] = ()  # stage config fields that differ

  def model_dir(self, work_dir: str) -> str:
    """Trials that can share models (a pfd_md student and its fine CTR teacher) share a dir."""
    days = f"days{self.train_days[0]}-{self.train_days[-1]}"
    knobs = "_".join(f"{k}={_short(v)}" for k, v in self.knobs) or "default"
    return os.path.join(work_dir, "models", self.world, days, f"seed{self.seed}", knobs)


def _short(value) -> str:
  if isinstance(value, (list, tuple)):
    return "+".join(map(str, value)) or "none"
  return str(value)


# ----------------------------------------------------------------------------- declared studies


def study_trials(paper: PaperConfig, study: str, days: Sequence[int],
                 seeds: Sequence[int]) -> List[Trial]:
  """The trials one study needs, declared (the order respects dependencies)."""
  long_days = tuple(days[:-1])
  short_days = tuple(days[:paper.short_days])
  trials: List[Trial] = []
  for seed in seeds:
    if study == "coarse":
      for train_days in (short_days, long_days):
        trials.append(Trial(study, "fine_ctr", "baseline", seed, train_days))
        trials += [Trial(study, "coarse", v, seed, train_days) for v in VARIANTS]
    elif study == "cvr":
      trials.append(Trial(study, "fine_ctr", "baseline", seed, long_days))
      trials += [Trial(study, "fine_cvr", v, seed, long_days) for v in VARIANTS]
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
  return trials


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


def world_path(work_dir: str, world: str) -> str:
  return os.path.join(work_dir, "worlds", world)


def ensure_world(preset: str, work_dir: str, world: str, seed: int) -> str:
  """Generates the main world or a noise-sweep world (reused when already there)."""
  overrides = {"seed": seed}
  if world.startswith("noise="):
    overrides["post_click_noise"] = float(world.split("=", 1)[1])
  path = world_path(work_dir, world)
  generate.generate(path, world_config.preset(preset, **overrides))
  return path


def stage_config(trial: Trial, base: config_lib.TrainConfig,
                 work_dir: str) -> config_lib.TrainConfig:
  """The trial's stage config: `base`'s settings, the trial's, and the knobs its stage has."""
  settings: Dict[str, Any] = dict(
      world_dir=world_path(work_dir, trial.world), model_dir=trial.model_dir(work_dir),
      train_days=tuple(trial.train_days), seed=trial.seed, variant=trial.variant, mode=None,
      reuse=True, **TASK.get(trial.stage, {}))
  settings.update((k, v) for k, v in trial.knobs if k != "scheme")
  return config_lib.for_stage(CONFIGS[trial.stage], base, **settings)


def run_trials(trials: Sequence[Trial], base: config_lib.TrainConfig,
               work_dir: str) -> pd.DataFrame:
  """Runs (or reuses) every trial; one row of metrics per trial."""
  rows = []
  started = time.time()
  for index, trial in enumerate(trials, start=1):
    metrics = runner.run_stage(stage_config(trial, base, work_dir))
    rows.append({**dataclasses.asdict(trial), **dict(trial.knobs), **_numeric(metrics)})
    logging.info("[%d/%d, %.0fs] %s %s %s seed %d days %s: auc=%s teacher_auc=%s", index,
                 len(trials), time.time() - started, trial.study, trial.stage, trial.variant,
                 trial.seed, _days(trial.train_days), _fmt(metrics.get("auc")),
                 _fmt(metrics.get("teacher_auc")))
  frame = pd.DataFrame(rows)
  frame["days"] = frame["train_days"].map(_days)
  return frame


def _numeric(metrics: Dict[str, Any]) -> Dict[str, float]:
  return {k: float(v) for k, v in metrics.items()
          if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}


def _days(days: Iterable[int]) -> str:
  days = list(days)
  return f"{days[0]}-{days[-1]}" if len(days) > 1 else str(days[0])


def _fmt(value: Optional[float]) -> str:
  return "-" if value is None else f"{value:.4f}"


# ----------------------------------------------------------------------------- online A/B


def online_study(paper: PaperConfig, frame_days: Sequence[int], seeds: Sequence[int],
                 work_dir: str) -> Dict[str, str]:
  """Replays the eval day through three funnels per seed and compares them with compare.

  Returns {comparison name: path of its report.md}.
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
      world = world or data.load(world_path(work_dir, "main"), verify="size")
      config = replay.ReplayConfig(
          world_dir=world_path(work_dir, "main"), model_dir=trial.model_dir(work_dir),
          run_dir=run_dir, day=day, coarse_variant=coarse_variant, cvr_variant=cvr_variant,
          label=name, seed=seed, max_requests=paper.online_max_requests, cascade_sample=500,
          oracle_cache_dir=os.path.join(work_dir, "oracle_cache"))
      if not os.path.exists(os.path.join(run_dir, replay.SUMMARY)):
        replay.replay(world, replay.parse_funnel(paper.paper_funnel), config)
      runs[name].append(run_dir)
  reports = {}
  for name in ("coarse_pfd_md", "cvr_pfd"):
    out = os.path.join(paper.report_dir, "online", name)
    reports[name] = compare.compare(runs["baseline"] + runs[name], out, baseline="baseline")
  return reports


# ----------------------------------------------------------------------------- the command


def paper_work_dir(paper: PaperConfig) -> str:
  return paper.work_dir or os.path.join(paper.report_dir, "work")


def study(paper: PaperConfig, training: config_lib.TrainConfig) -> str:
  """Runs the chosen studies; returns the report's path. `training` holds the settings every
  trial shares, on the main world (world_path(work_dir, 'main')) with model_dir=work_dir."""
  if paper.seeds < 2:
    logging.warning("--seeds=%d: confidence intervals need at least 2 seeds", paper.seeds)
  work_dir = paper_work_dir(paper)
  seeds = list(range(paper.seeds))
  ensure_world(paper.preset, work_dir, "main", 0)
  world = driver.open_world(training)
  base = driver.resolve(training, world)
  days = world.days
  trials = [t for name in paper.studies for t in study_trials(paper, name, days, seeds)]
  for world_name in sorted({t.world for t in trials} - {"main"}):
    ensure_world(paper.preset, work_dir, world_name, 0)
  logging.info("paper study: %d stage runs over %d seeds, studies %s", len(trials), len(seeds),
               list(paper.studies))
  frame = run_trials(trials, base, work_dir)
  online = online_study(paper, days, seeds, work_dir) if "online" in paper.studies else {}
  command_line = " ".join(["python -m experiments.paper"] + sys.argv[1:])
  return paper_report.write(frame, online, paper.report_dir, command=command_line,
                            studies=list(paper.studies))


def main() -> None:
  paper = command.config_from_flags(PaperConfig)
  work_dir = paper_work_dir(paper)
  training = config_lib.from_flags(config_lib.TrainConfig,
                                   world_dir=world_path(work_dir, "main"), model_dir=work_dir)
  print(f"report: {study(paper, training)}")


def run() -> None:
  command.define_config_flags(PaperConfig)
  config_lib.define_flags(config_lib.TrainConfig, skip=NOT_FLAGS)
  command.start(command.run_command(main, "experiments.paper"))


if __name__ == "__main__":
  run()
