"""The training loop every stage shares: seeding, the optimizer, a resumable fit, evaluation.

`fit` trains with Keras fit on an endless, seeded stream of batches that can start at any
global step, so a killed run resumed from its last backup sees exactly the batches an
uninterrupted run would have. With validation rows, `fit` also stops when the student's
validation figure stops improving, checked within the epoch (`models.validation`), and keeps
the best check's weights; `learning_summary` gives the curve for metrics.json.
`evaluate_heads` gives the student's (and the teacher's) ranking metrics on held-out rows, and
with the oracle's true probabilities their headroom (`data.headroom`).
"""

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from data import headroom
from data import metrics as metrics_lib
from data import numeric
from models import optimizers
from models import pipeline
from models import validation as validation_lib
from stages import config as config_lib


def seed_everything(seed: int) -> None:
  """Seeds Python, numpy and TF, and makes TF ops deterministic."""
  tf.keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()


def make_optimizer(config: config_lib.TrainConfig):
  """Adam with row-wise updates of the embedding tables by default (models.optimizers)."""
  return optimizers.make_optimizer(config.optimizer, config.learning_rate)


class _StepCounter(tf.keras.callbacks.Callback):
  """Counts optimizer steps in Python (reading the variable every batch would stall the loop).

  Starts from the optimizer's counter at train begin, after BackupAndRestore has restored it.
  """

  def on_train_begin(self, logs=None):
    self.step = int(self.model.optimizer.iterations.numpy())

  def on_train_batch_end(self, batch, logs=None):
    self.step += 1
    self.after_step(logs or {})

  def after_step(self, logs):
    raise NotImplementedError


class _StopAfterSteps(_StepCounter):
  """Stops training once the run has made `max_steps` optimizer steps in total."""

  def __init__(self, max_steps: int):
    super().__init__()
    self.max_steps = max_steps

  def after_step(self, logs):
    if self.step >= self.max_steps:
      self.model.stop_training = True


class _ProgressLog(_StepCounter):
  """One absl log line every `every` steps and at each epoch's end."""

  def __init__(self, every: int, total_steps: Optional[int]):
    super().__init__()
    self.every, self.total = every, total_steps

  def after_step(self, logs):
    if self.step % self.every == 0:
      logging.info("step %d/%s %s", self.step, self.total or "?", _format_logs(logs))

  def on_epoch_end(self, epoch, logs=None):
    logging.info("epoch %d done: %s", epoch + 1, _format_logs(logs or {}))


def _format_logs(logs) -> str:
  return ", ".join(f"{k}={float(v):.4f}" for k, v in sorted(logs.items()))


class _BackupAtStepsAndEpochEnd(tf.keras.callbacks.BackupAndRestore):
  """BackupAndRestore saving every `save_freq` steps and also at each epoch's end.

  The saved batch counter is then the epoch's last batch, so a resumed run starts the next
  epoch; without the epoch-end save a run killed before its first `save_freq` steps of an
  epoch would restart from the last interval save (or from step 0).
  """

  def on_epoch_end(self, epoch, logs=None):
    super().on_epoch_end(epoch, logs)
    self._backup(epoch=epoch)
    self._batches_count = 0


def resumable_dataset(arrays: Dict[str, np.ndarray], batch_size: int, seed: int,
                      start_step: Callable[[], int]) -> Tuple[tf.data.Dataset, int]:
  """An endless stream of shuffled batches that can pick up at any global step.

  Epoch e visits the rows in a permutation seeded by (seed, e). The stream starts at
  `start_step()`, read when iteration begins (after Keras has restored a backup), so a resumed
  run sees exactly the batches an uninterrupted run would have. Returns (dataset, steps/epoch).
  """
  n = len(next(iter(arrays.values())))
  steps_per_epoch = max(1, -(-n // batch_size))

  def batches():
    step = int(start_step())
    while True:
      epoch, first = divmod(step, steps_per_epoch)
      order = np.random.default_rng([seed, epoch]).permutation(n)
      for b in range(first, steps_per_epoch):
        rows = np.sort(order[b * batch_size:(b + 1) * batch_size])
        yield {k: v[rows] for k, v in arrays.items()}
      step = (epoch + 1) * steps_per_epoch

  spec = {k: tf.TensorSpec((None,) + v.shape[1:], tf.as_dtype(v.dtype))
          for k, v in arrays.items()}
  dataset = tf.data.Dataset.from_generator(batches, output_signature=spec)
  return dataset.prefetch(2), steps_per_epoch


def fit(model: tf.keras.Model, arrays: Dict[str, np.ndarray], config: config_lib.TrainConfig,
        out_dir: str,
        extra_callbacks: Sequence[tf.keras.callbacks.Callback] = (),
        validation: Optional[Dict[str, np.ndarray]] = None,
        min_steps: int = 0) -> tf.keras.callbacks.History:
  """Trains with Keras fit, resumable: a killed run continues from its last saved step.

  A BackupAndRestore keeps the model, optimizer and epoch/step counters under
  `out_dir/checkpoints/backup` every `checkpoint_every` steps and at each epoch's end (Keras's
  own saves at one or the other, not both), and deletes them once training completes; the final
  weights go to `checkpoints/final`. The backup is the caller's to keep or drop: the driver
  drops one of another configuration (layout.claim_resumable_state).
  With `validation` rows (holding the model's label), a `ValidationStopping` callback checks
  them every `validate_every` steps, stops after `patience` checks without improvement (never
  before `min_steps`) and restores the best weights; it is `history.validation`. Its search
  (curve, best weights, patience) is in the backup too: a resumed run ends as an
  uninterrupted one.
  """
  model.compile(optimizer=make_optimizer(config))
  # Build every variable (teacher included) before BackupAndRestore looks for them.
  model.compute_loss({k: tf.constant(v[:2]) for k, v in arrays.items()}, training=False)
  model.built = True
  model.reset_metrics()
  dataset, steps_per_epoch = resumable_dataset(
      arrays, config.batch_size, config.seed, lambda: model.optimizer.iterations.numpy())
  # Validation stopping comes before the backup, so a backup taken at a step holds its check.
  stopping = _validation_stopping(model, validation, config, steps_per_epoch, min_steps)
  callbacks: List[tf.keras.callbacks.Callback] = [] if stopping is None else [stopping]
  callbacks += [
      _BackupAtStepsAndEpochEnd(os.path.join(out_dir, "checkpoints", "backup"),
                                save_freq=config.checkpoint_every),
      tf.keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"), update_freq=100),
      _ProgressLog(every=max(config.checkpoint_every, 100),
                   total_steps=(steps_per_epoch or 0) * config.epochs or None),
  ]
  if config.max_steps:
    callbacks.append(_StopAfterSteps(config.max_steps))
  callbacks.extend(extra_callbacks)
  callbacks.extend(config.callbacks)
  history = model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                      callbacks=callbacks, verbose=0)
  checkpoint = tf.train.Checkpoint(model=model)
  checkpoint.write(os.path.join(out_dir, "checkpoints", "final", "ckpt"))
  history.validation = stopping
  return history


def _validation_stopping(model, validation: Optional[Dict[str, np.ndarray]],
                         config: config_lib.TrainConfig, steps_per_epoch: int,
                         min_steps: int) -> Optional[validation_lib.ValidationStopping]:
  """The run's early-stopping callback, or None without validation rows."""
  if validation is None or not len(next(iter(validation.values()))):
    return None
  label = getattr(model, "label", None) or "click"
  every = config.validate_every or max(1, steps_per_epoch // 10)
  return validation_lib.ValidationStopping(validation, label, every_steps=every,
                                           patience=config.patience, monitor=config.monitor,
                                           min_steps=min_steps)


def warmup_steps(model) -> int:
  """The distillation's swap step k (0 for a model without one): stopping waits for it."""
  return int(getattr(getattr(model, "task", None), "swap_step", 0) or 0)


def learning_summary(history: tf.keras.callbacks.History) -> Dict[str, Any]:
  """metrics.json's learning_curve ([{step, logloss, auc}]), best_step and stopped_step."""
  stopping = getattr(history, "validation", None)
  if stopping is None:
    return {}
  return {"learning_curve": list(stopping.curve), "best_step": int(stopping.best_step),
          "stopped_step": int(stopping.curve[-1]["step"]) if stopping.curve else 0,
          "validate_every": int(stopping.every_steps)}


def evaluate_heads(model, arrays: Dict[str, np.ndarray], label: str,
                   true_p: Optional[np.ndarray] = None) -> Dict[str, Any]:
  """The student's ranking metrics on `arrays` (and the teacher's, prefixed `teacher_`).

  With `true_p`, the oracle's probability of each row's label (`data.headroom`), also
  ceiling_auc, eauc and ceiling_eauc of the student, and the teacher's teacher_eauc.
  """
  labels = arrays[label]
  groups = arrays["user_id"]
  student = numeric.sigmoid(pipeline.predict(lambda b: model.student(b, training=False), arrays))
  result: Dict[str, Any] = metrics_lib.ranking_metrics(labels, student, groups)
  result["n_eval"] = int(len(labels))
  if true_p is not None:
    result.update(headroom.headroom_metrics(labels, student, true_p))
  if getattr(model, "teacher", None) is not None:
    teacher = numeric.sigmoid(
        pipeline.predict(lambda b: model.teacher_logits(b, training=False), arrays))
    teacher_metrics = metrics_lib.ranking_metrics(labels, teacher, groups)
    for name, value in teacher_metrics.items():
      result[f"teacher_{name}"] = value
    if true_p is not None:
      result["teacher_eauc"] = metrics_lib.eauc(true_p, teacher)
  return result
