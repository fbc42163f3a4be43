"""A job: one stage run as the study and the demo ask for it, and the command that makes it.

A job is a stage config and what trains it: the stage's own task (`stages.catalogue`), or the
stage's linear reference (`experiments.reference`). It travels between processes as JSON
(`to_json` / `from_json`: the stage's name and the config's flag fields), and `command_line`
is the `python -m ...` argv a user would type for it, whose digest names the run in its
receipt (`experiments.runner`).
"""

import dataclasses
import sys
from typing import Any, Dict, List

from experiments import reference
from stages import catalogue
from stages import config as config_lib


@dataclasses.dataclass(frozen=True)
class Job:
  """One stage run: its config, and whether it trains the stage's linear reference
  (`experiments.reference`) instead of the stage's own model."""
  config: config_lib.TrainConfig
  reference: bool = False

  @property
  def stage(self) -> catalogue.Stage:
    return catalogue.of(self.config)

  def task_class(self) -> Any:
    task = self.stage.task_class()
    return reference.reference_task(task) if self.reference else task

  def to_json(self) -> Dict[str, Any]:
    return {"stage": self.stage.name, "reference": self.reference,
            "config": config_lib.field_values(self.config)}

  @classmethod
  def from_json(cls, message: Dict[str, Any]) -> "Job":
    config_class = catalogue.stage(message["stage"]).config_class()
    return cls(config_class(**message["config"]), bool(message.get("reference")))


def as_job(run: Any) -> Job:
  """A Job, or a stage config taken as the job of its own stage."""
  return run if isinstance(run, Job) else Job(run)


def command_line(job: Any) -> List[str]:
  """The `python -m <module> ...` argv of the command that runs `job` (a Job or a config):
  the stage's own command with one flag per config field, or the task's own flags where it
  names them (`command_flags(config)`, the linear reference)."""
  job = as_job(job)
  task = job.task_class()
  own_flags = getattr(task, "command_flags", None)
  return ([sys.executable, "-m", task.__module__]
          + (own_flags(job.config) if own_flags else config_lib.command_flags(job.config)))
