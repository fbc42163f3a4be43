"""Runs that would learn or measure nothing: stop them, or say so in one line.

A world from real logs can be small, sparse or missing a signal, and a stage trained on it
then exports a model and an AUC that look like results. After a stage has read its rows, and
before it writes anything, the driver calls `check`:

  stop  the training rows hold no positive of the stage's label (a CVR stage on a log
        without conversions): there is nothing to learn;
  stop  a distilled variant (pfd, pfd_md, lupi) on a world without privileged features for
        the stage, or whose teacher's privileged features are 0 in every training row: the
        teacher knows nothing the student does not;
  warn  some of those privileged features are 0 in every training row;
  warn  training takes fewer than MIN_STEPS steps (rows / batch size x epochs, or
        --max_steps): the model barely leaves its initialisation;
  warn  the evaluation day holds fewer than MIN_EVAL_USERS users or MIN_EVAL_POSITIVES
        positives of the label: its AUC is mostly noise.

A stop is a StageError (one line, exit status 2, nothing written); each warning is one line
in the log, and the list goes into metrics.json under `warnings`.
"""

import math
from typing import Any, Dict, List

from absl import logging
import numpy as np

from data.world import schema as S
from models import teacher_kinds
from stages import catalogue
from stages import config as config_lib

MIN_STEPS = 32
MIN_EVAL_USERS = 30
MIN_EVAL_POSITIVES = 100
LABEL_NAMES = {S.CLICK: "clicks", S.CONVERSION: "conversions"}


def check(world, config: config_lib.TrainConfig, train: Dict[str, Any], label: str,
          evaluated: bool = True) -> List[str]:
  """Raises StageError for a run that cannot learn; returns the warnings (logged)."""
  who = f"{config.stage} --variant={config.variant}"
  labels = np.asarray(train[label])
  positives = int(np.sum(labels > 0))
  if positives == 0:
    raise config_lib.StageError(
        f"{who}: the training rows (days {_days(config.train_days)}) hold no "
        f"{LABEL_NAMES.get(label, label)} among {len(labels):,} rows: nothing to learn; train "
        "this stage on a log that has them (or leave it out of the funnel)")
  warnings = _privileged(world, config, train, who)
  warnings += _steps(config, len(labels), who)
  if evaluated:
    warnings += _eval_day(world, config, label, who)
  for warning in warnings:
    logging.warning("%s", warning)
  return warnings


def _days(days) -> str:
  days = list(days)
  return f"{days[0]}-{days[-1]}" if len(days) > 1 else str(days[0])


def _privileged(world, config, train, who: str) -> List[str]:
  kind = teacher_kinds.get(config.variant)
  if not kind.needs_privileged:
    return []
  declared = [f.name for f in world.schema.privileged_features(config.stage)
              if f.availability in kind.adds]
  if not declared:
    raise config_lib.StageError(
        f"{who}: this world has no privileged feature for the {config.stage} stage (its "
        "source declares none): the teacher would know nothing the student does not; train "
        "--variant=baseline, md or self")
  names = [n for n in declared if n in train]
  if not names:
    return []
  zero = [n for n in names if not np.any(np.asarray(train[n]) != 0)]
  if len(zero) == len(names):
    raise config_lib.StageError(
        f"{who}: every privileged feature its teacher reads ({', '.join(names)}) is 0 in all "
        "training rows: the teacher knows nothing the student does not; train "
        "--variant=baseline or md, or ingest a log that has these signals")
  if zero:
    return [f"{who}: privileged feature(s) {', '.join(zero)} are 0 in every training row; "
            "the teacher learns from the others only"]
  return []


def _steps(config, rows: int, who: str) -> List[str]:
  batch = config.batch_size or catalogue.stage(config.stage).batch_size
  per_epoch = max(1, math.ceil(rows / batch))
  steps = per_epoch * config.epochs
  if steps >= MIN_STEPS or config.max_steps:  # --max_steps: a length the user chose
    return []
  smaller = max(1, rows // (MIN_STEPS * 2))
  return [f"{who}: {steps} training step(s) ({rows:,} rows, --batch_size={batch}, "
          f"--epochs={config.epochs}): fewer than {MIN_STEPS}, the model barely leaves its "
          f"initialisation; pass --batch_size={smaller} or more --epochs"]


def _eval_day(world, config, label: str, who: str) -> List[str]:
  day = config.eval_day
  rows = world.log_arrays([day], [S.USER_ID, S.CLICK, S.CONVERSION])
  if label == S.CONVERSION:
    rows = {k: v[rows[S.CLICK] > 0] for k, v in rows.items()}
  users = len(np.unique(rows[S.USER_ID]))
  positives = int(np.sum(rows[label] > 0))
  if users >= MIN_EVAL_USERS and positives >= MIN_EVAL_POSITIVES:
    return []
  return [f"{who}: eval day {day} holds {users} user(s) and {positives} "
          f"{LABEL_NAMES.get(label, label)}: fewer than {MIN_EVAL_USERS} users or "
          f"{MIN_EVAL_POSITIVES} positives, so its AUC is mostly noise; evaluate on a bigger "
          "day (--eval_day) or read it with its interval"]
