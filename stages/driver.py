"""The one driver every stage runs through, and the shape of a stage task.

    world -> split -> reuse? -> seed -> inputs -> validation rows -> claim the model dir
          -> lock the stage dir -> keep or drop the resumable state (by config key) -> model
          -> fit (validation stopping) -> evaluate (with headroom) -> export -> metrics.json

Validation rows are a seeded share of the last training day's requests (`data.world.splits`,
--validation_fraction), removed from the training rows before the model is built; `fit` checks
them within the epoch and keeps the best weights, and metrics.json gains the learning curve.

A stage module is a `StageTask` subclass that says only what is its own: how it reads its
inputs from the world, which model it trains, how it evaluates it and what it exports. The
driver does the rest, the same way for every stage, and never changes the config it is given:
the world's defaults (eval day, training days) and the teacher's default mode go into a new,
resolved config.
"""

import dataclasses
import json
import os
import time
from typing import Any, Dict, Generic, List, Optional, Type, TypeVar

from absl import logging
import numpy as np

import data
from data.plumbing import command
from data.plumbing import files
from data.world import io
from data.world import splits
from stages import catalogue
from stages import config as config_lib
from stages import degenerate
from stages import distribute as distribute_lib
from stages import layout
from stages import teachers
from stages import training

StageError = config_lib.StageError
Arrays = Dict[str, Any]
ConfigT = TypeVar("ConfigT", bound=config_lib.TrainConfig)


@dataclasses.dataclass
class Inputs:
  """A run's training rows, whatever its evaluation reads, and its validation rows."""
  train: Arrays
  evaluation: Any = None
  validation: Optional[Arrays] = None
  validation_skipped: str = ""  # why validation stopping is off despite --validation_fraction


class StageTask(Generic[ConfigT]):
  """One stage: its config class, inputs, model, evaluation and export; generic in the
  stage's config class, so a stage reads its own settings typed.

  The driver makes one task per run, after the world is open and the config resolved.
  """
  CONFIG: Type[config_lib.TrainConfig] = config_lib.TrainConfig
  label = "click"
  warnings: List[str] = []  # degenerate.check's, for metrics.json
  teacher_facts: Optional[Dict[str, Any]] = None  # the teacher's identity (`teachers`)

  def __init__(self, world: Any, config: ConfigT, out_dir: str):
    self.world, self.config, self.out_dir = world, config, out_dir

  @classmethod
  def upstream(cls, config: ConfigT) -> Dict[str, Optional[str]]:
    """The exports this run reads, with their identity; part of its reuse key."""
    return {}

  @classmethod
  def output_dir(cls, config: ConfigT) -> str:
    """Where the run writes: MODEL_DIR/<stage>/<variant>/."""
    return layout.stage_dir(config.model_dir, config.output, config.variant)

  def build_inputs(self) -> Inputs:
    raise NotImplementedError

  def build_model(self, inputs: Inputs):
    raise NotImplementedError

  def evaluate(self, model, inputs: Inputs) -> Dict[str, Any]:
    raise NotImplementedError

  def export(self, model, facts: Dict[str, Any]) -> None:
    raise NotImplementedError


def resolve(config: config_lib.TrainConfig, world):
  """A new config with the world's default split, the teacher's default mode and the stage's
  default batch size filled in."""
  days = list(world.days)
  eval_day = world.eval_day(config.eval_day)
  train_days: List[int] = (list(config.train_days) if config.train_days is not None
                           else [d for d in days if d < eval_day])
  outside = [d for d in train_days if d not in days]
  if outside:
    raise StageError(f"--train_days {outside} are outside the world: it has days "
                     f"{days[0]}..{days[-1]}")
  if not train_days:
    raise StageError(f"no training day before --eval_day={eval_day}")
  mode = config.mode or teachers.default_mode(config.stage, config.variant)
  # A driver's base config (stage "training") keeps 0: each stage run fills in its own.
  stage = None if config.stage == config_lib.TrainConfig.BASE_STAGE else catalogue.of(config)
  # The stage's epoch bound assumes validation stopping ends the run; without it, one pass.
  epochs = config.epochs or (0 if stage is None else stage.epochs if config.validates else 1)
  return dataclasses.replace(config, eval_day=eval_day, train_days=tuple(train_days), mode=mode,
                             batch_size=config.batch_size or (stage.batch_size if stage else 0),
                             epochs=epochs)


def train(task_class: Type[StageTask], config: config_lib.TrainConfig) -> Dict[str, Any]:
  """Trains, evaluates and exports one run of a stage (or reuses it); returns its metrics.

  Nothing is written before the flags, the world and the training rows have been checked, so
  a refused run leaves no trace; from then on the stage dir is locked for this run alone.
  Under --strategy=multi_worker every worker trains, but only the chief claims, locks and
  writes (`stages.distribute`); a parameter-server cluster's workers and ps tasks serve here.
  """
  training.configure_threads(config)  # before TensorFlow's runtime starts
  distribution = distribute_lib.start(config)  # before any other TensorFlow work
  world = data.open_world(config.world_dir)
  epochs_given = config.epochs
  config = resolve(config, world)
  layout.check_model_dir(config.model_dir, world)
  out_dir = task_class.output_dir(config)
  upstream = task_class.upstream(config)
  key = layout.config_key(config, upstream)
  if config.reuse:
    done = layout.finished_metrics(out_dir, key)
    if done is not None:
      return done
  teacher = teachers.check_teacher(world, config)  # refused here, before anything is written
  training.seed_everything(config.seed)
  task = task_class(world, config, out_dir)
  task.teacher_facts = teacher
  inputs = hold_out_validation(task.build_inputs(), config, task.label)
  if inputs.validation_skipped and not epochs_given and config.epochs != 1:
    # The stage's bound assumes stopping ends the run; without it, one pass (more overfits).
    logging.warning("training 1 epoch, not the stage's bound of %d: nothing stops it",
                    config.epochs)
    task.config = config = dataclasses.replace(config, epochs=1)
  task.warnings = degenerate.check(world, config, inputs.train, task.label)
  if not distribution.writes:  # another worker of a multi-worker run: trains, writes nothing
    return _train_locked(task, inputs, upstream, distribution)
  layout.claim_model_dir(config.model_dir, world)
  with layout.stage_lock(out_dir):
    layout.claim_resumable_state(out_dir, key)
    return _train_locked(task, inputs, upstream, distribution)


def _train_locked(task: StageTask, inputs: Inputs, upstream: Dict[str, Optional[str]],
                  distribution: distribute_lib.Distribution) -> Dict[str, Any]:
  """Model, fit, evaluation, export and metrics.json, once the stage dir is this run's."""
  world, config, out_dir = task.world, task.config, task.out_dir
  started = time.perf_counter()  # Teacher pre-training included: the cost study reads it.
  with distribution.strategy.scope():
    model = task.build_model(inputs)
  history = training.fit(model, inputs.train, config, out_dir, validation=inputs.validation,
                         min_steps=training.warmup_steps(model))
  train_seconds = time.perf_counter() - started
  n_train = int(len(inputs.train[task.label]))
  if not distribution.distributed:
    # Evaluation reads no training row: free them (in place: the caller holds `inputs` too),
    # so the evaluation's memory (the oracle's) comes instead of the rows', not on top.
    inputs.train.update(io.take_rows(inputs.train, slice(0, 2)))
  shards: Dict[str, Any] = {}
  if distribution.distributed:
    if not distribution.writes:
      logging.info("%s %s: %s done; the chief evaluates and exports", config.stage,
                   config.variant, distribution.task.name)
      distribution.finish()
      return {**distribution.facts(), "task": distribution.task.name, "exported": False}
    shards = distribute_lib.table_shards(model)
    # Evaluate and export a local copy: ordinary variables, no collectives, no servers.
    model = distribute_lib.plain_copy(lambda: task.build_model(inputs), inputs.train,
                                      training.final_checkpoint(out_dir))

  metrics = task.evaluate(model, inputs)
  metrics["n_train"] = n_train
  metrics["n_validation"] = (0 if inputs.validation is None
                             else int(len(inputs.validation[task.label])))
  metrics["train_seconds"] = train_seconds
  if inputs.validation_skipped:
    metrics["validation_skipped"] = inputs.validation_skipped
  if task.warnings:
    metrics["warnings"] = task.warnings
  metrics.update(training.learning_summary(history))
  metrics.update(distribution.facts())
  if shards:
    metrics["table_shards"] = shards
  facts = layout.run_facts(world, config, upstream, teacher=task.teacher_facts)
  metrics.update(facts)
  task.export(model, facts)
  files.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  distribution.finish()
  shown = {k: v for k, v in metrics.items() if k in ("auc", "gauc", "teacher_auc")
           or k.startswith("recall@")}
  logging.info("%s %s: %s -> %s", config.stage, config.variant, shown, out_dir)
  return metrics


def hold_out_validation(inputs: Inputs, config: config_lib.TrainConfig, label: str) -> Inputs:
  """Moves --validation_fraction of the last training day's requests out of the training rows.
  Consumes `inputs.train` (its dict is emptied as its columns are split).

  Every row of a held-out request leaves training (unlabelled candidates included); only its
  labelled rows validate.
  """
  if not config.validates:
    return inputs
  train = inputs.train
  held = splits.validation_mask(train["request_id"], train["day"], config.validation_fraction,
                                config.seed, config.validation_days)
  labelled = held & (train[label] >= 0)
  positives = int(np.sum(train[label][labelled] > 0))
  if positives < config.min_validation_positives:
    # An AUC on a handful of positives is noise (its standard error is about 0.1 at 10):
    # stopping on it would pick a random check. Train the fixed --epochs on every row instead.
    logging.warning("validation stopping off: the held-out rows hold %d %s positives, fewer "
                    "than --min_validation_positives=%d; training on every row",
                    positives, label, config.min_validation_positives)
    return dataclasses.replace(inputs, validation_skipped=(
        f"{positives} positives < --min_validation_positives={config.min_validation_positives}"))
  validation = io.take_rows(train, labelled)
  # The training rows leave `inputs.train` column by column: never held twice.
  return dataclasses.replace(inputs, train=io.take_rows(train, ~held, consume=True),
                             validation=validation)


def run(task_class: Type[StageTask], name: str) -> None:
  """A stage's command: its flags from its config class, then train and print the metrics."""
  config_lib.define_flags(task_class.CONFIG)

  def main() -> None:
    metrics = train(task_class, config_lib.from_flags(task_class.CONFIG))
    print(json.dumps(files.json_safe(metrics), indent=2, sort_keys=True))

  command.start(command.run_command(main, name))
