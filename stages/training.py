"""The training loop every stage shares: seeding, the optimizer, a resumable fit, evaluation.

`fit` trains with Keras fit on an endless, seeded stream of batches that can start at any
global step, so a killed run resumed from its last backup sees exactly the batches an
uninterrupted run would have. With validation rows, `fit` also stops when the student's
validation figure stops improving, checked within the epoch (`models.validation`), and keeps
the best check's weights; `learning_summary` gives the curve for metrics.json.
`evaluate_heads` gives the student's (and the teacher's) ranking metrics on held-out rows, and
with the oracle's true probabilities their headroom (`data.stats.headroom`).
"""

import contextlib
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from data.plumbing import files
from data.plumbing import progress
from data.stats import headroom
from data.stats import metrics as metrics_lib
from data.world import numeric
from models import distribute
from models import optimizers
from models import pipeline
from models import validation as validation_lib
from stages import config as config_lib
from stages import distribute as distribute_lib


def seed_everything(seed: int) -> None:
  """Seeds Python, numpy and TF, and makes TF ops deterministic."""
  tf.keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()


def configure_threads(config: config_lib.TrainConfig) -> None:
  """TensorFlow's inter- and intra-op thread counts from the config (0: TensorFlow's own).

  They can be set only before TensorFlow's runtime starts; a process that already runs with
  other counts (a long-lived worker's earlier trial) keeps them, with a warning: op
  determinism makes the results the same either way.
  """
  threading = tf.config.threading
  for name, value, get, set_ in (
      ("inter_op_threads", config.inter_op_threads, threading.get_inter_op_parallelism_threads,
       threading.set_inter_op_parallelism_threads),
      ("intra_op_threads", config.intra_op_threads, threading.get_intra_op_parallelism_threads,
       threading.set_intra_op_parallelism_threads)):
    if value == get():
      continue
    try:
      set_(value)
    except RuntimeError:
      logging.warning("--%s=%d not applied: TensorFlow already runs with %d in this process",
                      name, value, get())


def make_optimizer(config: config_lib.TrainConfig):
  """Adam with row-wise updates of the embedding tables by default (models.optimizers)."""
  return optimizers.make_optimizer(config.optimizer, config.learning_rate)


class _StepCounter(tf.keras.callbacks.Callback):
  """Counts optimizer steps in Python (reading the variable every batch would stall the loop).

  Starts from the optimizer's counter at train begin, after BackupAndRestore has restored it.
  Takes the logs as they come (under a parameter-server strategy, values still on the
  workers): converting them every batch would wait for each step.
  """

  def __init__(self):
    super().__init__()
    self._supports_tf_logs = True

  def on_train_begin(self, logs=None):
    self.step = int(self.model.optimizer.iterations.numpy())

  def on_train_batch_end(self, batch, logs=None):
    self.step += 1
    self.after_step(logs or {})

  def after_step(self, logs):
    raise NotImplementedError


class _StartStep(tf.keras.callbacks.Callback):
  """The optimizer's step when training begins, after BackupAndRestore has restored it: where
  the input stream starts. (The stream used to read the variable itself when its first batch
  was asked for; by then the first step's increment, which waits for no data, had usually
  run, so a fresh run skipped its first batch. A race, now gone.)"""

  def __init__(self):
    super().__init__()
    self.step = 0

  def on_train_begin(self, logs=None):
    self.step = int(self.model.optimizer.iterations.numpy())


class _Throughput(tf.keras.callbacks.Callback):
  """Wall time of the steps after the first (which traces the step function): metrics.json's
  examples_per_second. Under a parameter-server strategy a step "ends" when scheduled; the
  last wait for the workers is in the total."""

  def __init__(self):
    super().__init__()
    self._supports_tf_logs = True
    self.start: Optional[float] = None
    self.steps, self.seconds = 0, 0.0

  def on_train_batch_end(self, batch, logs=None):
    if self.start is None:
      self.start = time.perf_counter()
    else:
      self.steps += 1

  def on_train_end(self, logs=None):
    if self.start is not None:
      self.seconds = time.perf_counter() - self.start


class _StopAfterSteps(_StepCounter):
  """Stops training once the run has made `max_steps` optimizer steps in total."""

  def __init__(self, max_steps: int):
    super().__init__()
    self.max_steps = max_steps

  def after_step(self, logs):
    if self.step >= self.max_steps:
      self.model.stop_training = True


class _ProgressLog(_StepCounter):
  """One absl log line every `every` steps and at each epoch's end; in a terminal, one line
  rewritten every 10 steps instead (data.plumbing.progress)."""

  def __init__(self, every: int, total_steps: Optional[int]):
    super().__init__()
    self.every, self.total = every, total_steps
    self.line = progress.Line("train")

  def after_step(self, logs):
    if self.step % (10 if self.line.live else self.every) == 0:
      self.line.update("step %d/%s %s", self.step, self.total or "?", _format_logs(logs))

  def on_epoch_end(self, epoch, logs=None):
    self.line.done("epoch %d done: %s", epoch + 1, _format_logs(logs or {}))


def _format_logs(logs) -> str:
  values = {k: v.fetch() if hasattr(v, "fetch") else v for k, v in logs.items()}  # RemoteValue
  return ", ".join(f"{k}={float(np.asarray(v)):.4f}" for k, v in sorted(values.items()))


class _BackupAtStepsAndEpochEnd(tf.keras.callbacks.BackupAndRestore):
  """BackupAndRestore saving every `save_freq` steps and also at each epoch's end.

  The saved batch counter is then the epoch's last batch, so a resumed run starts the next
  epoch; without the epoch-end save a run killed before its first `save_freq` steps of an
  epoch would restart from the last interval save (or from step 0).
  """

  def on_epoch_end(self, epoch, logs=None):
    super().on_epoch_end(epoch, logs)
    if self._coordinator() is not None:
      self._training_state._ckpt_saved_batch.assign(self.params["steps"] - 1)
    self._backup(epoch=epoch)
    self._batches_count = 0

  def on_train_batch_end(self, batch, logs=None):
    coordinator = self._coordinator()
    if coordinator is None:
      return super().on_train_batch_end(batch, logs)
    # Keras makes no step backups under a parameter-server strategy (a step it has scheduled
    # may not have run): wait until every scheduled step has, then save as elsewhere.
    self._batches_count += 1
    if self._batches_count >= self.save_freq:
      self._batches_count = 0
      coordinator.join()
      self._training_state._ckpt_saved_batch.assign(batch)
      self._backup(epoch=self._current_epoch, batch=batch)

  def _coordinator(self):
    return getattr(self.model, "_cluster_coordinator", None)


def resumable_rows(n: int, batch_size: int, seed: int, start_step: Callable[[], int],
                   replicas: Tuple[int, int, int] = (0, 1, 1)) -> Tuple[tf.data.Dataset, int]:
  """An endless stream of the row numbers of shuffled batches, from any global step.

  Epoch e visits the n rows in a permutation seeded by (seed, e), each batch's rows sorted.
  The stream starts at `start_step()`, read when iteration begins (after Keras has restored a
  backup), so a resumed run sees exactly the batches an uninterrupted run would have. Returns
  (dataset of int64 [B], steps per epoch). `replicas` = (first, local, total): under a
  synchronous strategy, this input pipeline feeds replicas first .. first + local - 1 of
  `total`, and yields in turn their shares of each global batch (its sorted rows in `total`
  near-equal runs), so together the replicas train on the batches one process would.
  """
  steps_per_epoch = max(1, -(-n // batch_size))
  first_replica, local, total = replicas

  def row_batches():
    step = int(start_step())
    while True:
      epoch, first = divmod(step, steps_per_epoch)
      order = np.random.default_rng([seed, epoch]).permutation(n)
      for b in range(first, steps_per_epoch):
        rows = np.sort(order[b * batch_size:(b + 1) * batch_size])
        if total == 1:
          yield rows
          continue
        yield from np.array_split(rows, total)[first_replica:first_replica + local]
      step = (epoch + 1) * steps_per_epoch

  return pipeline.row_stream(row_batches), steps_per_epoch


def resumable_dataset(arrays: Dict[str, Any], batch_size: int, seed: int,
                      start_step: Callable[[], int],
                      replicas: Tuple[int, int, int] = (0, 1, 1),
                      columns: Optional[Sequence[str]] = None) -> Tuple[tf.data.Dataset, int]:
  """The batches of `resumable_rows` over `arrays` (only `columns`, default all), gathered
  in a tf.data map: (dataset, steps per epoch). `fit` gathers the same rows in its step."""
  rows, steps_per_epoch = resumable_rows(pipeline.num_rows(arrays), batch_size, seed,
                                         start_step, replicas)
  resident = pipeline.resident_columns(arrays, columns)
  return rows.map(lambda index: pipeline.gather_rows(resident, index)), steps_per_epoch


@contextlib.contextmanager
def gathering_steps(model, arrays: Dict[str, Any], columns: Sequence[str]):
  """Within: `model`'s training step takes a batch's row numbers and gathers the batch from
  `columns` of `arrays`, kept resident (their memory shared, `pipeline.resident_columns`).

  The gather runs in the step rather than in a tf.data map because under op determinism
  tf.data deep-copies every tensor a dataset captures (`pipeline.gathered_batches`): the
  training rows would be held twice.
  """
  resident = pipeline.resident_columns(arrays, columns)
  train_step = model.train_step
  model.train_step = lambda rows: train_step(pipeline.gather_rows(resident, rows))
  try:
    yield
  finally:
    del model.train_step  # the class's own again
    model.train_function = None  # its trace holds the resident columns: let them go


def model_columns(model, arrays: Dict[str, Any]) -> List[str]:
  """The columns of `arrays` that `model` reads: its heads' inputs and its label, in the
  arrays' order; every column when a head does not say what it reads."""
  heads = [getattr(model, name, None) for name in ("student", "teacher", "scorer")]
  names = {getattr(model, "label", None)}
  for head in heads:
    if head is None:
      continue
    inputs = list(getattr(head, "input_names", None) or [])
    if not inputs:
      return list(arrays)
    names.update(inputs)
  if not any(head is not None for head in heads):
    return list(arrays)
  return [name for name in arrays if name in names]


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
  strategy = model.distribute_strategy
  with strategy.scope():
    history, stopping = _fit_in_scope(model, arrays, config, out_dir, extra_callbacks,
                                      validation, min_steps)
    with distribute_lib.written_by_chief(final_checkpoint(out_dir), strategy) as path:
      tf.train.Checkpoint(model=model).write(path)
  history.validation = stopping
  return history


def final_checkpoint(out_dir: str) -> str:
  """Where `fit` writes the trained weights (the chief's copy)."""
  return os.path.join(out_dir, "checkpoints", "final", "ckpt")


def _fit_in_scope(model, arrays, config, out_dir, extra_callbacks, validation, min_steps):
  strategy = model.distribute_strategy
  model.compile(optimizer=make_optimizer(config))
  # Build every variable (teacher included) before BackupAndRestore looks for them.
  distribute_lib.build_variables(model, arrays)
  model.reset_metrics()
  backup_dir = os.path.join(out_dir, "checkpoints", "backup")
  start = _StartStep()
  dataset, steps_per_epoch, gathered = training_input(model, arrays, config, out_dir,
                                                      backup_dir, lambda: start.step)
  # Validation stopping comes before the backup, so a backup taken at a step holds its check.
  stopping = _validation_stopping(model, validation, config, steps_per_epoch, min_steps)
  callbacks: List[tf.keras.callbacks.Callback] = [] if stopping is None else [stopping]
  callbacks += [_BackupAtStepsAndEpochEnd(backup_dir, save_freq=config.checkpoint_every),
                start]  # after the backup's restore
  if not distribute.is_parameter_server(strategy):  # its logs are on the workers
    callbacks.append(tf.keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"),
                                                    update_freq=100))
  callbacks.append(_ProgressLog(every=max(config.checkpoint_every, 100),
                                total_steps=(steps_per_epoch or 0) * config.epochs or None))
  throughput = _Throughput()
  callbacks.append(throughput)
  if config.max_steps:
    callbacks.append(_StopAfterSteps(config.max_steps))
  callbacks.extend(extra_callbacks)
  callbacks.extend(config.callbacks)
  try:
    with (gathering_steps(model, arrays, gathered) if gathered is not None
          else contextlib.nullcontext()):
      history = model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                          callbacks=callbacks, verbose=0)
  finally:
    if distribute.is_parameter_server(strategy):
      files.remove_tree(os.path.join(out_dir, "checkpoints", distribute_lib.INPUT_DIR))
  history.throughput = {"timed_steps": throughput.steps, "timed_seconds": throughput.seconds,
                        "examples_per_second": throughput.steps * config.batch_size
                        / throughput.seconds if throughput.seconds else 0.0}
  return history, stopping


def training_input(model, arrays: Dict[str, np.ndarray], config: config_lib.TrainConfig,
                   out_dir: str, backup_dir: str, start_step: Callable[[], int]):
  """(what `fit` reads, steps per epoch, the columns its step gathers or None) under the
  model's strategy: the resumable stream of global batches' row numbers from `start_step()`
  (the step gathers the model's columns); under a synchronous strategy each input pipeline
  yields its replicas' shares of them; under a parameter-server one the workers read the rows
  from files in `out_dir` (and the start step from the backup: their datasets are made before
  Keras restores it) and gather them themselves."""
  strategy = model.distribute_strategy
  columns = model_columns(model, arrays)
  n = pipeline.num_rows(arrays)
  if distribute.is_default(strategy):
    rows, steps_per_epoch = resumable_rows(n, config.batch_size, config.seed, start_step)
    return rows, steps_per_epoch, columns
  steps_per_epoch = max(1, -(-n // config.batch_size))
  if distribute.is_parameter_server(strategy):
    directory = os.path.join(out_dir, "checkpoints", distribute_lib.INPUT_DIR)
    spec = distribute_lib.write_input_files({k: arrays[k] for k in columns}, directory)
    workers = distribute.cluster_task().count("worker")
    return distribute_lib.parameter_server_input(
        directory, spec, config.batch_size, config.seed,
        distribute_lib.backed_up_step(backup_dir, steps_per_epoch), workers) + (None,)
  creator = distribute_lib.synchronous_input(lambda replicas: resumable_rows(
      n, config.batch_size, config.seed, start_step, replicas)[0])
  return creator, steps_per_epoch, columns


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
  """metrics.json's learning_curve ([{step, logloss, auc}]), best_step and stopped_step, and
  the training speed (examples_per_second over the steps after the first, global batches)."""
  summary: Dict[str, Any] = dict(getattr(history, "throughput", {}))
  stopping = getattr(history, "validation", None)
  if stopping is None:
    return summary
  return {**summary, "learning_curve": list(stopping.curve), "best_step": int(stopping.best_step),
          "stopped_step": int(stopping.curve[-1]["step"]) if stopping.curve else 0,
          "validate_every": int(stopping.every_steps)}


def evaluate_heads(model, arrays: Dict[str, np.ndarray], label: str,
                   true_p: Optional[np.ndarray] = None) -> Dict[str, Any]:
  """The student's ranking metrics on `arrays` (and the teacher's, prefixed `teacher_`).

  With `true_p`, the oracle's probability of each row's label (`data.stats.headroom`), also
  ceiling_auc, eauc and ceiling_eauc of the student, and the teacher's teacher_eauc.
  """
  labels = arrays[label]
  groups = arrays["user_id"]
  student = numeric.sigmoid(pipeline.head_predictor(model, "student")(arrays))
  result: Dict[str, Any] = metrics_lib.ranking_metrics(labels, student, groups)
  result["n_eval"] = int(len(labels))
  if true_p is not None:
    result.update(headroom.headroom_metrics(labels, student, true_p))
  if getattr(model, "teacher", None) is not None:
    teacher = numeric.sigmoid(pipeline.head_predictor(model, "teacher")(arrays))
    teacher_metrics = metrics_lib.ranking_metrics(labels, teacher, groups)
    for name, value in teacher_metrics.items():
      result[f"teacher_{name}"] = value
    if true_p is not None:
      result["teacher_eauc"] = metrics_lib.eauc(true_p, teacher)
  return result
