"""The main job, end to end: a world, the funnel's models, two replays and their comparison.

    python -m experiments.demo --work_dir=work --preset=small --seed=0

1. generates the world (skipped if WORK/world already holds it);
2. trains every stage the two funnels need: retrieval, fine CTR, fine CVR baseline and PFD,
   coarse baseline and PFD+MD (the fine CTR model as the coarse teacher);
3. replays the held-out last day through the baseline funnel (coarse baseline, CVR baseline)
   and through the distilled one (coarse pfd_md, CVR pfd);
4. compares them (simulated online clicks, conversions and GMV with 95% CIs, funnel survival,
   offline AUCs) and prints the table and the report's path.
Finished steps are reused when run again with the same configuration (stages: --reuse).
Every stage flag (--batch_size, --hidden_units, --epochs ...) applies to every stage.
"""

import dataclasses
import os
from typing import Dict, List, Tuple

from absl import app
from absl import flags
from absl import logging

from data import config as config_lib
from data import generate
from experiments import compare
from experiments import replay
from experiments import runner
from stages import common

flags.DEFINE_string("work_dir", "work", "Where the world, models, runs and report go.")
flags.DEFINE_integer("demo_cascade_sample", 500, "Requests per replay on which the cascade "
                     "figures (coarse->fine recall, Kendall tau) are computed: they need the "
                     "fine models on all N1 candidates.")
flags.DEFINE_string("demo_funnel", "retrieval:1000,coarse:100,fine:10",
                    "Funnel sizes of the replays (see experiments.replay --funnel).")
FLAGS = flags.FLAGS  # --preset, --seed and --world_dir come from data.generate / data.cli.

# (stage, variant, stage-specific settings), in dependency order: the fine CTR model is the
# coarse pfd_md teacher and the CVR runs' CTCVR reference.
STAGE_RUNS: List[Tuple[str, str, Dict]] = [
    ("retrieval", "baseline", {}),
    ("fine_ctr", "baseline", {}),
    ("fine_cvr", "baseline", {}),
    ("fine_cvr", "pfd", {}),
    ("coarse", "baseline", {}),
    ("coarse", "pfd_md", {}),
]
# The two funnels: (label, coarse variant, CVR variant).
FUNNELS = [("baseline", "baseline", "baseline"), ("pfd", "pfd_md", "pfd")]


def world_dir(work_dir: str) -> str:
  return os.path.join(work_dir, "world")


def train_stages(base: common.StageConfig) -> None:
  """Each stage as its own command, in a child process (see experiments.runner)."""
  for index, (stage, variant, extra) in enumerate(STAGE_RUNS, start=1):
    logging.info("[%d/%d] training %s %s", index, len(STAGE_RUNS), stage, variant)
    config = dataclasses.replace(base, variant=variant, extra=dict(extra), mode=None,
                                 reuse=True)
    metrics = runner.run_stage(stage, config)
    shown = {k: round(v, 4) for k, v in metrics.items()
             if k in ("auc", "teacher_auc", "recall@100", "recall@1000", "train_seconds")}
    logging.info("[%d/%d] %s %s: %s", index, len(STAGE_RUNS), stage, variant, shown)


def replay_funnels(base: common.StageConfig, world) -> List[str]:
  run_dirs = []
  for label, coarse_variant, cvr_variant in FUNNELS:
    run_dir = os.path.join(FLAGS.work_dir, "runs", label)
    logging.info("replaying day %d through the %s funnel", base.eval_day, label)
    config = replay.ReplayConfig(world_dir=base.world_dir, model_dir=base.model_dir,
                                 run_dir=run_dir, day=base.eval_day,
                                 coarse_variant=coarse_variant, cvr_variant=cvr_variant,
                                 label=label, seed=base.seed, overwrite=True,
                                 cascade_sample=FLAGS.demo_cascade_sample,
                                 oracle_cache_dir=os.path.join(FLAGS.work_dir, "oracle_cache"))
    replay.replay(world, replay.parse_funnel(FLAGS.demo_funnel), config)
    run_dirs.append(run_dir)
  return run_dirs


def main(argv):
  del argv
  seed = FLAGS.seed or 0
  path = world_dir(FLAGS.work_dir)
  logging.info("world: %s (preset %s, seed %d)", path, FLAGS.preset, seed)
  generate.generate(path, config_lib.preset(FLAGS.preset, seed=seed))
  base = common.StageConfig.from_flags(world_dir=path,
                                       model_dir=os.path.join(FLAGS.work_dir, "models"))
  world = common.open_world(base)
  train_stages(base)
  run_dirs = replay_funnels(base, world)
  compare.compare(run_dirs, os.path.join(FLAGS.work_dir, "report"), baseline="baseline")


def run():
  # The demo's own default: batches of 2048 halve the optimizer steps of every stage, which
  # keeps the whole job within ~15 minutes on 2 cores (--batch_size still overrides it).
  FLAGS.set_default("batch_size", 2048)
  app.run(main)


if __name__ == "__main__":
  run()
