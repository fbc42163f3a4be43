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
regime"). The best weights are kept in memory: a run resumed from a backup starts a fresh
search from the restored weights.
"""

import math
from typing import Dict, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from data import metrics
from data import numeric
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
    self._best_weights: Optional[list] = None
    self._wait = 0
    self._step = 0
    self._last_checked = -1

  def on_train_begin(self, logs=None):
    self._step = int(self.model.optimizer.iterations.numpy())

  def on_train_batch_end(self, batch, logs=None):
    self._step += 1
    if self._step % self.every_steps == 0:
      self._check()

  def on_epoch_end(self, epoch, logs=None):
    if self._last_checked != self._step:
      self._check()

  def on_train_end(self, logs=None):
    if self._best_weights is not None:
      self.model.set_weights(self._best_weights)
      logging.info("validation: restored the best weights (step %d, %s=%.5f)", self.best_step,
                   self.monitor, self.best)

  def evaluate(self) -> Dict[str, float]:
    """The student's validation logloss and AUC now."""
    logits = pipeline.predict(lambda b: self.model.student(b, training=False), self.arrays)
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
      self._best_weights = self.model.get_weights()
    elif self._step >= self.min_steps:
      self._wait += 1
    logging.info("validation at step %d: logloss=%.5f auc=%.4f (best %s=%.5f at step %d)",
                 self._step, figures["logloss"], figures["auc"], self.monitor, self.best,
                 self.best_step)
    if self._wait >= self.patience:
      logging.info("validation: no improvement in %d checks; stopping", self.patience)
      self.model.stop_training = True
