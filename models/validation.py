"""Early stopping on held-out rows, checked within the epoch, keeping the best weights.

Deep CTR models with id embeddings overfit after about one pass over the data (Zhang et al.,
CIKM 2022, "one-epoch overfitting"): the id embeddings memorise, and training AUC climbs while
held-out AUC falls, sometimes within the first epoch. Keras's EarlyStopping looks only at epoch
ends; this callback evaluates the student on validation rows every `every_steps` optimizer
steps (and at each epoch end), keeps the weights of the best check, stops after `patience`
checks without improvement, and restores the best weights when training ends. Its `curve`
(step, logloss, AUC per check) is the run's learning curve.

This callback monitors the validation logloss by default; the stages monitor AUC
(`stages.config.TrainConfig.monitor`): on the simulator's worlds the logloss keeps falling for
epochs while the model calibrates, after its ranking has peaked (BUILD_NOTES.md, "Training
regime"). Its state (the curve, the best figure and step, the patience count and the best
weights) lives in variables tracked by the model, so the model's checkpoints hold it: a run
resumed from a backup continues the same search, and ends as the uninterrupted run would.
"""

import math
from typing import Any, Dict, List, Optional, cast

from absl import logging
import numpy as np
import tensorflow as tf

from data.stats import metrics
from data.world import numeric
from models import distribute
from models import pipeline

MONITORS = ("logloss", "auc")


class ValidationStopping(tf.keras.callbacks.Callback):
  """Stops training when the student's validation `monitor` stops improving.

  Args:
    arrays: validation rows (every column the student reads, and `label`).
    label: the label column ('click' or 'conversion').
    every_steps: check every this many optimizer steps (and at each epoch end).
    patience: checks without an improvement of at least `min_delta` before stopping.
    monitor: 'logloss' (lower is better) or 'auc' (higher is better).
    min_steps: never stop before this many steps (e.g. the teacher warm-up of PFD).
  """

  def __init__(self, arrays: Dict[str, np.ndarray], label: str, every_steps: int,
               patience: int = 3, monitor: str = "logloss", min_delta: float = 0.0,
               min_steps: int = 0):
    super().__init__()
    if monitor not in MONITORS:
      raise ValueError(f"monitor must be one of {MONITORS}, got {monitor!r}")
    if every_steps < 1 or patience < 1:
      raise ValueError("every_steps and patience must be >= 1")
    self.arrays, self.label = arrays, label
    self.every_steps, self.patience = every_steps, patience
    self.monitor, self.min_delta, self.min_steps = monitor, min_delta, min_steps
    self.curve: List[Dict[str, float]] = []
    self.best: Optional[float] = None
    self.best_step = 0
    self._wait = 0
    self._step = 0
    self._last_checked = -1
    self._loaded = False
    self._state: Optional[tf.train.Checkpoint] = None

  def set_model(self, model: tf.keras.Model) -> None:
    """Tracks the search's state on the model, before a backup callback restores it."""
    super().set_model(model)
    state = getattr(model, STATE_ATTRIBUTE, None)
    if state is None:
      state = _search_state()
      # A tf.train.Checkpoint, not a Layer or tf.Module: Keras tracks it as a checkpoint
      # dependency without counting its variables among the model's weights.
      setattr(model, STATE_ATTRIBUTE, state)
    self._state = state
    self._write_state()  # a fresh search, unless a backup is restored over it
    if model.weights:  # built (the stages build before fit): slots exist before any restore
      self._best_slots()

  def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
    self._loaded = False

  def on_train_batch_begin(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
    # Read at the first batch, after any backup callback's on_train_begin has restored the
    # model: this callback may come first, so that a backup taken after a step holds its check.
    if not self._loaded:
      self._step = int(self.model.optimizer.iterations.numpy())
      self._read_state()
      self._loaded = True

  def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
    self._step += 1
    if self._step % self.every_steps == 0:
      self._check()

  def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
    if self._last_checked != self._step:
      self._check()

  def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
    if self.best is not None and int(self._search_state().has_best.numpy()):
      for variable, best in zip(self.model.weights, self._best_slots()):
        variable.assign(best)
      logging.info("validation: restored the best weights (step %d, %s=%.5f)", self.best_step,
                   self.monitor, self.best)

  def evaluate(self) -> Dict[str, float]:
    """The student's validation logloss and AUC now."""
    logits = pipeline.head_predictor(self.model, "student")(self.arrays)
    probabilities = numeric.sigmoid(logits)
    labels = self.arrays[self.label]
    return {"logloss": metrics.logloss(labels, probabilities),
            "auc": metrics.auc(labels, probabilities)}

  def _improved(self, value: float) -> bool:
    if self.best is None or math.isnan(self.best):
      return not math.isnan(value)
    if self.monitor == "logloss":
      return value < self.best - self.min_delta
    return value > self.best + self.min_delta

  def _check(self) -> None:
    self._last_checked = self._step
    figures = self.evaluate()
    self.curve.append({"step": self._step, **figures})
    value = figures[self.monitor]
    if self._improved(value):
      self.best, self.best_step, self._wait = value, self._step, 0
      for best, variable in zip(self._best_slots(), self.model.weights):
        best.assign(variable)
      self._search_state().has_best.assign(1)
    elif self._step >= self.min_steps:
      self._wait += 1
    self._write_state()
    logging.info("validation at step %d: logloss=%.5f auc=%.4f (best %s=%.5f at step %d)",
                 self._step, figures["logloss"], figures["auc"], self.monitor, self.best,
                 self.best_step)
    if self._wait >= self.patience:
      logging.info("validation: no improvement in %d checks; stopping", self.patience)
      self.model.stop_training = True

  def _best_slots(self) -> List[tf.Variable]:
    """One variable per model weight for the best check's values, made on first need."""
    state = self._search_state()
    slots = getattr(state, "best_weights", None)
    if slots is None or len(slots) != len(self.model.weights):
      state.best_weights = [distribute.local_variable(w, trainable=False)
                            for w in self.model.weights]
    return cast(List[tf.Variable], state.best_weights)

  def _search_state(self) -> tf.train.Checkpoint:
    if self._state is None:
      raise RuntimeError("ValidationStopping used before set_model")
    return self._state

  def _write_state(self) -> None:
    state = self._search_state()
    state.curve.assign(np.array([[c["step"], c["logloss"], c["auc"]] for c in self.curve],
                                np.float64).reshape(-1, 3))
    state.best.assign(np.nan if self.best is None else self.best)
    state.best_step.assign(self.best_step)
    state.wait.assign(self._wait)
    state.last_checked.assign(self._last_checked)

  def _read_state(self) -> None:
    """The search so far: empty in a fresh run, the backup's in a resumed one."""
    state = self._search_state()
    self.curve = [{"step": int(step), "logloss": float(logloss), "auc": float(auc)}
                  for step, logloss, auc in state.curve.numpy()]
    best = float(state.best.numpy())
    self.best = None if math.isnan(best) else best
    self.best_step = int(state.best_step.numpy())
    self._wait = int(state.wait.numpy())
    self._last_checked = int(state.last_checked.numpy())


STATE_ATTRIBUTE = "validation_search_state"


def _search_state() -> tf.train.Checkpoint:
  """Fresh search variables: no check yet (the best weights' slots come with the model's).
  They are this process's own, under any distribution strategy (every worker of a
  multi-worker run makes the same checks in step)."""
  local = distribute.local_variable
  return tf.train.Checkpoint(
      curve=local(np.zeros((0, 3)), shape=tf.TensorShape([None, 3]), trainable=False,
                  name="validation_curve"),
      best=local(np.nan, dtype=tf.float64, trainable=False, name="validation_best"),
      best_step=local(0, dtype=tf.int64, trainable=False),
      wait=local(0, dtype=tf.int64, trainable=False),
      last_checked=local(-1, dtype=tf.int64, trainable=False),
      has_best=local(0, dtype=tf.int64, trainable=False))
