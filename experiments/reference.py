"""The linear reference of a ranking stage: a logistic regression on the stage's serving inputs.

    python -m experiments.reference --stage=coarse --world_dir=W --model_dir=M
    python -m experiments.reference --stage=fine_cvr --world_dir=W --model_dir=M

A stage's DNN should beat a linear model of the same inputs on the same rows; if it does not,
it is undertrained or overfitting (issue 11). This command trains `models.linear.LinearRanker`
over exactly the features the stage's student serves with, through the stages' own driver:
the same training and evaluation rows, the same validation hold-out and stopping, the same
optimizer and flags, the same metrics (headroom included). It writes
MODEL_DIR/reference/<stage>/metrics.json (with "student": "linear") and exports nothing.
Its one default of its own: --epochs=8, an upper bound for validation stopping, since a linear
model peaks after several epochs where the DNN peaks within one (BUILD_NOTES.md).
"""

import json
import os
from typing import Any, Dict, List, Type

from absl import flags

from data.plumbing import command
from data.plumbing import files
from models import distillation
from models import linear
from stages import catalogue
from stages import config as config_lib
from stages import driver

STAGES = catalogue.RANKING
REFERENCE_DIR = "reference"
REFERENCE_EPOCHS = 8  # upper bound: validation stopping ends the run (2-6 epochs measured)
NOT_FLAGS = ("variant", "mode")  # the reference has no teacher


def reference_task(task_class: Type[driver.StageTask]) -> Type[driver.StageTask]:
  """`task_class` with a LinearRanker student, no teacher, no export, its own output dir."""

  class ReferenceTask(task_class):  # type: ignore[valid-type,misc]

    @classmethod
    def output_dir(cls, config: config_lib.TrainConfig) -> str:
      return os.path.join(config.model_dir, REFERENCE_DIR, config.stage)

    @classmethod
    def command_flags(cls, config: config_lib.TrainConfig) -> List[str]:
      """This command's flags for `config` (experiments.runner runs it in a child process)."""
      return [f"--stage={config.stage}"] + config_lib.command_flags(
          config, config_lib.TrainConfig, skip=NOT_FLAGS)

    def build_model(self, inputs: driver.Inputs):
      features = distillation.student_features(self.world.schema, self.config.stage)
      return distillation.DistillationModel(linear.LinearRanker(features, name="linear"), None,
                                            label=self.label)

    def evaluate(self, model, inputs: driver.Inputs) -> Dict[str, Any]:
      return {**super().evaluate(model, inputs), "student": linear.LINEAR}

    def export(self, model, facts: Dict[str, Any]) -> None:
      """The reference is a yardstick, not a serving model: nothing to export."""

  ReferenceTask.__name__ = f"Reference{task_class.__name__}"
  return ReferenceTask


def config_for(stage: str, base: config_lib.TrainConfig, **settings: Any):
  """The stage's config for the reference run (variant baseline: no teacher)."""
  if stage not in STAGES:
    raise config_lib.StageError(f"--stage={stage}: expected one of {', '.join(STAGES)}")
  return catalogue.stage(stage).make_config(base, **{"variant": "baseline", **settings})


def train(stage: str, base: config_lib.TrainConfig, **settings: Any) -> Dict[str, Any]:
  """Trains and evaluates the linear reference of `stage`; returns its metrics."""
  task_class = catalogue.stage(stage).task_class()
  return driver.train(reference_task(task_class), config_for(stage, base, **settings))


def run() -> None:
  flags.DEFINE_enum("stage", None, list(STAGES), "The stage whose serving inputs the logistic "
                    "regression reads.")
  config_lib.define_flags(config_lib.TrainConfig, skip=NOT_FLAGS)
  flags.FLAGS.set_default("epochs", REFERENCE_EPOCHS)
  flags.mark_flag_as_required("stage")

  def main() -> None:
    base = config_lib.from_flags(config_lib.TrainConfig)
    metrics = train(flags.FLAGS.stage, base)
    print(json.dumps(files.json_safe(metrics), indent=2, sort_keys=True))

  command.start(command.run_command(main, "experiments.reference"))


if __name__ == "__main__":
  run()
