"""The main job, end to end: a world, the funnel's models, two replays and their comparison.

    python -m experiments.demo --work_dir=work --preset=small --seed=0

1. generates the world (skipped if WORK/world already holds it);
2. trains every stage the two funnels need: retrieval, fine CTR, fine CVR baseline and PFD,
   coarse baseline and PFD+MD (the fine CTR model as the coarse teacher);
3. replays the held-out last day through the baseline funnel (coarse baseline, CVR baseline)
   and through the distilled one (coarse pfd_md, CVR pfd);
4. compares them (simulated online clicks, conversions and GMV with 95% CIs, funnel survival,
   offline AUCs) and prints the headline and the report's path; the report is also one HTML
   page, opened in headless Chromium when the machine has it (a screenshot beside it).
Finished steps are reused when run again with the same configuration (stages: --reuse).
Every stage flag (--batch_size, --hidden_units, --epochs ...) applies to every stage.
"""

import dataclasses
import os
from typing import Any, Dict, List, Tuple

from absl import flags
from absl import logging

import data
from data import generate
from data.plumbing import command
from data.world import config as world_config
from experiments import browser_check
from experiments import compare
from experiments import funnel as funnel_lib
from experiments import replay
from experiments import runner
from stages import catalogue
from stages import config as config_lib
from stages import driver

FLAGS = flags.FLAGS
# Training settings the demo decides per run; every other TrainConfig field is a flag.
NOT_FLAGS = ("world_dir", "model_dir", "variant", "mode", "reuse")
DEMO_BATCH_SIZE = 2048


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  """The demo's own settings (the training ones are `stages.config.TrainConfig`'s)."""
  work_dir: str = dataclasses.field(default="work", metadata={
      "help": "Where the world, models, runs and report go."})
  preset: str = dataclasses.field(default="small", metadata={
      "help": "The world's preset.", "choices": sorted(world_config.PRESETS)})
  demo_cascade_sample: int = dataclasses.field(default=500, metadata={
      "help": "Requests per replay on which the cascade figures (coarse->fine recall, "
              "Kendall tau) are computed: they need the fine models on all N1 candidates."})
  demo_funnel: str = dataclasses.field(default="retrieval:1000,coarse:100,fine:10", metadata={
      "help": "Funnel sizes of the replays (see experiments.replay --funnel)."})


# (stage, variant), in dependency order: the fine CTR model is the coarse pfd_md teacher and
# the CVR runs' CTCVR reference.
STAGE_RUNS: List[Tuple[catalogue.Stage, str]] = [
    (catalogue.RETRIEVAL, "baseline"),
    (catalogue.FINE_CTR, "baseline"),
    (catalogue.FINE_CVR, "baseline"),
    (catalogue.FINE_CVR, "pfd"),
    (catalogue.COARSE, "baseline"),
    (catalogue.COARSE, "pfd_md"),
]
# The two funnels: (label, coarse variant, CVR variant).
FUNNELS = [("baseline", "baseline", "baseline"), ("pfd", "pfd_md", "pfd")]


def demo_batch_size(stage: str) -> int:
  """Batches of 2048 on impressions halve the optimizer steps of every stage trained on them,
  which keeps the whole job within ~15 minutes on 2 cores; fine CVR (on clicks) keeps its
  stage default."""
  if stage == catalogue.FINE_CVR.name:
    return catalogue.FINE_CVR.batch_size
  return DEMO_BATCH_SIZE


def world_dir(work_dir: str) -> str:
  return os.path.join(work_dir, "world")


def train_stages(base: config_lib.TrainConfig) -> None:
  """Each stage as its command would run it, one after another in one long-lived trial worker
  (experiments.runner): TensorFlow starts once for the six runs."""
  configs = []
  for stage, variant in STAGE_RUNS:
    config = stage.make_config(base, variant=variant, mode=None, reuse=True)
    if not config.batch_size:  # the demo's default; --batch_size still overrides it
      config = dataclasses.replace(config, batch_size=demo_batch_size(config.stage))
    configs.append(config)
  logging.info("[1/%d] training %s %s", len(configs), configs[0].stage, configs[0].variant)

  def done(index: int, metrics: Dict[str, Any]) -> None:
    config = configs[index]
    shown = {k: round(v, 4) for k, v in metrics.items()
             if k in ("auc", "teacher_auc", "recall@100", "recall@1000", "train_seconds")}
    logging.info("[%d/%d] %s %s: %s", index + 1, len(configs), config.stage, config.variant,
                 shown)
    if index + 1 < len(configs):
      following = configs[index + 1]
      logging.info("[%d/%d] training %s %s", index + 2, len(configs), following.stage,
                   following.variant)

  # In the declared order: each run after the one before it.
  runner.run_stages(configs, [[]] + [[i] for i in range(len(configs) - 1)], workers=1,
                    done=done)


def replay_funnels(demo: DemoConfig, base: config_lib.TrainConfig, world) -> List[str]:
  run_dirs = []
  for label, coarse_variant, cvr_variant in FUNNELS:
    run_dir = os.path.join(demo.work_dir, "runs", label)
    logging.info("replaying day %d through the %s funnel", base.eval_day, label)
    config = replay.ReplayConfig(world_dir=base.world_dir, model_dir=base.model_dir,
                                 run_dir=run_dir, day=base.eval_day,
                                 coarse_variant=coarse_variant, cvr_variant=cvr_variant,
                                 label=label, seed=base.seed, overwrite=True,
                                 cascade_sample=demo.demo_cascade_sample,
                                 oracle_cache_dir=os.path.join(demo.work_dir, "oracle_cache"))
    replay.replay(world, funnel_lib.parse_funnel(demo.demo_funnel), config)
    run_dirs.append(run_dir)
  return run_dirs


def demo(config: DemoConfig, training: config_lib.TrainConfig) -> str:
  """The whole job; `training` holds the settings every stage run shares. Returns the report."""
  path = world_dir(config.work_dir)
  logging.info("world: %s (preset %s, seed %d)", path, config.preset, training.seed)
  generate.generate(path, world_config.preset(config.preset, seed=training.seed))
  base = dataclasses.replace(training, world_dir=path,
                             model_dir=os.path.join(config.work_dir, "models"))
  world = data.open_world(base.world_dir)
  base = driver.resolve(base, world)
  train_stages(base)
  run_dirs = replay_funnels(config, base, world)
  report = compare.compare(run_dirs, os.path.join(config.work_dir, "report"),
                           baseline="baseline")
  check_page(os.path.join(os.path.dirname(report), "report.html"))
  return report


def check_page(page: str) -> None:
  """Opens the report's page in headless Chromium when the machine has it, keeping a
  screenshot beside it (experiments.browser_check); says so when it cannot."""
  if browser_check.find_chromium() is None:
    logging.info("no Chromium here: the page is not checked (apt-get install -y chromium)")
    return
  try:
    result = browser_check.check_page(page)
  except command.UserError as error:
    logging.warning("the report's page could not be checked in Chromium: %s", error)
    return
  logging.info("%s renders in Chromium: %d/%d figures loaded; screenshot %s", page,
               result.loaded, result.images, result.screenshot)


def main() -> None:
  demo_config = command.config_from_flags(DemoConfig)
  work_dir = demo_config.work_dir
  training = config_lib.from_flags(
      config_lib.TrainConfig, world_dir=world_dir(work_dir),
      model_dir=os.path.join(work_dir, "models"))
  demo(demo_config, training)


def run() -> None:
  command.define_config_flags(DemoConfig)
  config_lib.define_flags(config_lib.TrainConfig, skip=NOT_FLAGS)
  command.start(command.run_command(main, "experiments.demo"))


if __name__ == "__main__":
  run()
