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

from absl import app
from absl import flags
from absl import logging
import numpy as np
import pandas as pd

import data
from data import config as config_lib
from data import generate
from experiments import compare
from experiments import paper_report
from experiments import replay
from experiments import runner
from stages import common

STUDIES = ("coarse", "cvr", "lambda", "cost", "online", "noise", "unlabelled")
flags.DEFINE_integer("seeds", 3, "Seeds per configuration (0 .. seeds-1).")
flags.DEFINE_list("studies", [s for s in STUDIES if s != "unlabelled"],
                  f"Which studies to run, of {', '.join(STUDIES)}.")
flags.DEFINE_string("work_dir", None, "Worlds, models and replays (default REPORT_DIR/work).")
flags.DEFINE_integer("short_days", 1, "Training days of the short-data column of Table A.")
flags.DEFINE_list("lambdas", ["0.1", "0.3", "0.5", "0.7", "0.9"], "λ values of the sweep.")
flags.DEFINE_list("noise_levels", ["0.25", "0.5", "1", "2", "4"],
                  "post_click_noise values of the noise sweep (one world each).")
flags.DEFINE_string("paper_funnel", "retrieval:1000,coarse:100,fine:10",
                    "Funnel of the online study's replays.")
flags.DEFINE_integer("online_max_requests", 0, "Replay at most this many requests per run "
                     "in the online study (0: the whole day).")
FLAGS = flags.FLAGS

VARIANTS = ("baseline", "lupi", "md", "pfd", "pfd_md")
TASK = {"fine_ctr": {"task": "ctr"}, "fine_cvr": {"task": "cvr"}}


@dataclasses.dataclass(frozen=True)
class Trial:
  """One stage run of the study: what to train, on which world and days, with which knobs."""
  study: str
  stage: str
  variant: str
  seed: int
  train_days: Tuple[int, ...]
  world: str = "main"  # or e.g. "noise=2" for the noise sweep's worlds
  knobs: Tuple[Tuple[str, Any], ...] = ()  # StageConfig fields / stage extras that differ

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


def study_trials(study: str, days: Sequence[int], seeds: Sequence[int]) -> List[Trial]:
  """The trials one study needs, declared (the order respects dependencies)."""
  long_days = tuple(days[:-1])
  short_days = tuple(days[:FLAGS.short_days])
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
      for lam in (float(x) for x in FLAGS.lambdas):
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
      for noise in FLAGS.noise_levels:
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


def ensure_world(work_dir: str, world: str, seed: int) -> str:
  """Generates the main world or a noise-sweep world (reused when already there)."""
  overrides = {"seed": seed}
  if world.startswith("noise="):
    overrides["post_click_noise"] = float(world.split("=", 1)[1])
  path = world_path(work_dir, world)
  generate.generate(path, config_lib.preset(FLAGS.preset, **overrides))
  return path


def stage_config(trial: Trial, base: common.StageConfig, work_dir: str) -> common.StageConfig:
  fields = {f.name for f in dataclasses.fields(common.StageConfig)}
  knobs = {k: v for k, v in trial.knobs if k != "scheme"}
  extra = {**TASK.get(trial.stage, {}), **{k: v for k, v in knobs.items() if k not in fields}}
  settings = dict(world_dir=world_path(work_dir, trial.world),
                  model_dir=trial.model_dir(work_dir), train_days=list(trial.train_days),
                  seed=trial.seed, variant=trial.variant, mode=None, reuse=True, extra=extra)
  settings.update({k: v for k, v in knobs.items() if k in fields})
  return dataclasses.replace(base, **settings)


def run_trials(trials: Sequence[Trial], base: common.StageConfig, work_dir: str) -> pd.DataFrame:
  """Runs (or reuses) every trial; one row of metrics per trial."""
  rows = []
  started = time.time()
  for index, trial in enumerate(trials, start=1):
    metrics = runner.run_stage(trial.stage, stage_config(trial, base, work_dir))
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


def online_study(frame_days: Sequence[int], seeds: Sequence[int], work_dir: str,
                 report_dir: str) -> Dict[str, str]:
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
          label=name, seed=seed, max_requests=FLAGS.online_max_requests, cascade_sample=500,
          oracle_cache_dir=os.path.join(work_dir, "oracle_cache"))
      if not os.path.exists(os.path.join(run_dir, replay.SUMMARY)):
        replay.replay(world, replay.parse_funnel(FLAGS.paper_funnel), config)
      runs[name].append(run_dir)
  reports = {}
  for name in ("coarse_pfd_md", "cvr_pfd"):
    out = os.path.join(report_dir, "online", name)
    reports[name] = compare.compare(runs["baseline"] + runs[name], out, baseline="baseline")
  return reports


# ----------------------------------------------------------------------------- the command


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = [s for s in FLAGS.studies if s not in STUDIES]
  if unknown or not FLAGS.report_dir:
    print(f"error: --report_dir is required and --studies must be of {', '.join(STUDIES)}; "
          f"got unknown {unknown}" if unknown else "error: --report_dir is required",
          file=sys.stderr)
    sys.exit(2)
  if FLAGS.seeds < 2:
    logging.warning("--seeds=%d: confidence intervals need at least 2 seeds", FLAGS.seeds)
  work_dir = FLAGS.work_dir or os.path.join(FLAGS.report_dir, "work")
  seeds = list(range(FLAGS.seeds))
  main_world = ensure_world(work_dir, "main", 0)
  base = common.StageConfig.from_flags(world_dir=main_world, model_dir=work_dir)
  days = common.open_world(base).days
  trials = [t for study in FLAGS.studies for t in study_trials(study, days, seeds)]
  for world in sorted({t.world for t in trials} - {"main"}):
    ensure_world(work_dir, world, 0)
  logging.info("paper study: %d stage runs over %d seeds, studies %s", len(trials), len(seeds),
               FLAGS.studies)
  frame = run_trials(trials, base, work_dir)
  online = online_study(days, seeds, work_dir, FLAGS.report_dir) \
      if "online" in FLAGS.studies else {}
  command = " ".join(["python -m experiments.paper"] + sys.argv[1:])
  path = paper_report.write(frame, online, FLAGS.report_dir, command=command,
                            studies=FLAGS.studies)
  print(f"report: {path}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
