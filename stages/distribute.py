"""A stage run under --strategy (`models.distribute`): who writes, what each strategy reads.

    default           the run as it always was: nothing here changes it.
    mirrored          one process; each global batch is split between the local replicas.
    multi_worker      every worker runs the stage command; each reads the world and takes its
                      replicas' shares of every global batch (the same seeded stream as one
                      process), so the model equals the single-process one to float rounding.
    parameter_server  the chief runs the command; the training rows go to files beside the
                      run (the workers read them: a shared filesystem), and each worker's
                      dataset is built from them in TensorFlow ops (a worker has no Python).

Checkpoints, TensorBoard logs and exports are written by the chief alone; other workers write
theirs to temp dirs and drop them (every worker must take part in a save: reading a variable
that is synchronised on read is a collective). Once training ends, the chief rebuilds the model
outside the strategy and restores the final checkpoint into it (`plain_copy`): evaluation and
the export then read ordinary variables, and the export serves alone.
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from data.plumbing import files
from data.plumbing import waits
from data.world import io
from models import distribute
from models import inputs as inputs_lib
from stages import config as config_lib

INPUT_DIR = "input"  # under a run's checkpoints/: the training rows a PS cluster's workers read
_STRATEGIES: Dict[Tuple[str, str], tf.distribute.Strategy] = {}


@dataclasses.dataclass(frozen=True)
class Distribution:
  """The strategy a run trains under, and this process's task in its cluster."""
  name: str
  strategy: tf.distribute.Strategy
  task: distribute.ClusterTask

  @property
  def writes(self) -> bool:
    """Whether this process writes the run's files (the chief, or the only process)."""
    return self.task.is_chief

  @property
  def distributed(self) -> bool:
    return self.name != distribute.DEFAULT

  def finish(self) -> None:
    """Waits until every worker of a multi-worker run is here (the chief once its files are
    written): a worker that left early would be reported dead by the chief's coordination
    service, and a chief that died would make the others fail instead of exit cleanly."""
    if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
      done = self.strategy.run(lambda: tf.constant(1.0))
      self.strategy.reduce(tf.distribute.ReduceOp.SUM, done, axis=None)

  def facts(self) -> Dict[str, Any]:
    """For metrics.json: the strategy, its synchronous replicas, its cluster's sizes."""
    facts: Dict[str, Any] = {"strategy": self.name}
    if self.distributed:
      facts["replicas"] = int(self.strategy.num_replicas_in_sync)
      facts["cluster"] = {job: len(tasks) for job, tasks in self.task.cluster.items()}
    return facts


def start(config: config_lib.TrainConfig) -> Distribution:
  """The run's strategy, made once per process (a multi-worker strategy must come before any
  other TensorFlow work). A worker or ps task of a parameter-server cluster serves here and
  never returns: every task runs the same command, as TensorFlow's own tools do."""
  try:
    task = distribute.cluster_task()
    distribute.check_cluster(config.strategy, task)
  except distribute.ClusterError as error:
    raise config_lib.StageError(str(error)) from None
  if distribute.serves_only(config.strategy, task):
    logging.info("parameter-server cluster: %s serves until the chief is done", task.name)
    distribute.serve(task)
  key = (config.strategy, os.environ.get("TF_CONFIG", ""))
  if key not in _STRATEGIES:
    _STRATEGIES[key] = _connect(config, task)
  return Distribution(config.strategy, _STRATEGIES[key], task)


def _connect(config: config_lib.TrainConfig, task: distribute.ClusterTask):
  """The strategy; under a cluster strategy, first a wait for every peer bounded by
  --cluster_timeout (SIGTERM ends it), then TensorFlow's own connection, bounded the same."""
  if config.strategy not in distribute.CLUSTER_STRATEGIES:
    return distribute.make_strategy(config.strategy, task, config.ps_shard_bytes)
  logging.info("%s: waiting for the cluster's other tasks (at most %gs, --cluster_timeout)",
               task.name, config.cluster_timeout)
  try:
    distribute.wait_for_peers(task, config.cluster_timeout)
  except distribute.ClusterError as error:
    raise config_lib.StageError(str(error)) from None
  with waits.bounded(f"TF_CONFIG task {task.name}: connecting to the cluster",
                     config.cluster_timeout, "--cluster_timeout"):
    return distribute.make_strategy(config.strategy, task, config.ps_shard_bytes)


def writes(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes what `strategy`'s training saves (Keras's own test)."""
  return bool(getattr(strategy.extended, "should_checkpoint", True))


@contextlib.contextmanager
def written_by_chief(path: str, strategy: tf.distribute.Strategy) -> Iterator[str]:
  """`path` on the chief; a temp path elsewhere, removed afterwards (the worker must still
  save, in step with the chief)."""
  if writes(strategy):
    yield path
    return
  scratch = tempfile.mkdtemp(prefix="pfd-worker-")
  try:
    yield os.path.join(scratch, os.path.basename(path))
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------- inputs


def replica_shares(context: tf.distribute.InputContext) -> Tuple[int, int, int]:
  """(first replica, local replicas, all replicas) that an input pipeline feeds."""
  total = int(context.num_replicas_in_sync)
  local = max(1, total // max(1, int(context.num_input_pipelines)))
  return int(context.input_pipeline_id) * local, local, total


def synchronous_input(make: Callable[[Tuple[int, int, int]], tf.data.Dataset]):
  """A DatasetCreator whose pipelines yield their replicas' shares of each global batch."""
  return tf.keras.utils.experimental.DatasetCreator(
      lambda context: make(replica_shares(context)))


def write_input_files(arrays: Dict[str, Any], directory: str) -> Dict[str, Any]:
  """The training rows as raw little-endian files a worker's TensorFlow ops can read; a
  request-level column (`data.world.io.RequestColumn`) as its table and its row index."""
  files.remove_tree(directory)
  os.makedirs(directory)
  spec: Dict[str, Any] = {}

  def save(name: str, values: np.ndarray) -> Dict[str, Any]:
    values = np.ascontiguousarray(values)
    values.astype(values.dtype.newbyteorder("<"), copy=False).tofile(
        os.path.join(directory, name))
    return {"file": name, "dtype": values.dtype.name, "shape": list(values.shape)}

  for name, column in arrays.items():
    if isinstance(column, io.RequestColumn):
      spec[name] = {"table": save(f"{name}.table", column.table),
                    "rows": save(f"{name}.rows", column.rows), "dtype": column.dtype.name}
    else:
      spec[name] = save(name, np.asarray(column))
  files.write_json(os.path.join(directory, "spec.json"), spec)
  return spec


def _read_column(directory: str, entry: Dict[str, Any]) -> tf.Tensor:
  raw = tf.io.read_file(os.path.join(directory, entry["file"]))
  return tf.reshape(tf.io.decode_raw(raw, tf.as_dtype(entry["dtype"])), entry["shape"])


def parameter_server_input(directory: str, spec: Dict[str, Any], batch_size: int, seed: int,
                           start_step: int, n_workers: int):
  """A DatasetCreator for the workers of a parameter-server cluster, in TensorFlow ops only.

  Epoch e visits the rows in a permutation seeded by (seed, e) (`stateless_shuffle`); worker w
  takes batches w, w + n_workers, ... of each epoch, from `start_step` (a resumed run's).
  The coordinator gives each step to whichever worker is free, so the order in which the
  model sees them is not fixed (asynchronous training).
  """
  first_column = next(iter(spec.values()))
  n = int(first_column.get("rows", first_column)["shape"][0])
  steps_per_epoch = max(1, -(-n // batch_size))
  start_epoch, start_batch = divmod(int(start_step), steps_per_epoch)

  def dataset_fn(context):
    del context
    worker = tf.cast(tf.distribute.coordinator.experimental_get_current_worker_index(),
                     tf.int64)
    columns = {}
    for name, entry in spec.items():
      if "rows" in entry:
        columns[name] = (_read_column(directory, entry["table"]),
                         tf.cast(_read_column(directory, entry["rows"]), tf.int64),
                         tf.as_dtype(entry["dtype"]))
      else:
        columns[name] = _read_column(directory, entry)

    def take(column, rows):
      if isinstance(column, tuple):
        table, index, dtype = column
        return tf.cast(tf.gather(table, tf.gather(index, rows)), dtype)
      return tf.gather(column, rows)

    def epoch_batches(epoch):
      order = tf.random.experimental.stateless_shuffle(
          tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
      first = tf.where(epoch == start_epoch, tf.constant(start_batch, tf.int64), 0)

      def batch(b):
        rows = tf.sort(order[b * batch_size:tf.minimum((b + 1) * batch_size, n)])
        return {name: take(column, rows) for name, column in columns.items()}

      steps = tf.data.Dataset.range(first, steps_per_epoch)
      return steps.shard(n_workers, worker).map(batch)

    epochs = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
    return epochs.flat_map(epoch_batches).prefetch(2)

  return tf.keras.utils.experimental.DatasetCreator(dataset_fn), steps_per_epoch


def backed_up_step(backup_dir: str, steps_per_epoch: int) -> int:
  """The step a run resumes at from the BackupAndRestore backup in `backup_dir` (0 if none),
  by Keras's own rule (`WorkerTrainingState.maybe_load_initial_counters_from_ckpt`)."""
  latest = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
  if latest is None:
    return 0
  epoch = int(tf.train.load_variable(latest, "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
  batch = int(tf.train.load_variable(latest, "ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
  if epoch < 0:
    return 0
  if batch < 0 or batch == steps_per_epoch - 1:
    return (epoch + 1) * steps_per_epoch
  return epoch * steps_per_epoch + batch + 1


# ----------------------------------------------------------------------------- after training


def table_shards(model) -> Dict[str, List[str]]:
  """Each embedding table of `model` split across parameter servers: the devices of its
  shards, in row order (metrics.json shows where a parameter-server run kept its tables)."""
  shards: Dict[str, List[str]] = {}
  for module in model.submodules:
    if isinstance(module, inputs_lib.EmbeddingBank):
      for group in module.groups:
        table = module.table(group)
        if isinstance(table, tf.__internal__.distribute.ShardedVariable):
          shards[f"{module.name}/{group}"] = [v.device for v in table.variables]
  return shards


def build_variables(model, arrays: Dict[str, Any]) -> None:
  """Creates every variable of `model` from two rows (BackupAndRestore and checkpoint restores
  need them), without the metrics where the model allows it."""
  batch = {k: tf.constant(v[:2]) for k, v in arrays.items()}
  builder = getattr(model, "build_variables", None)
  if builder is not None:
    builder(batch)
  else:
    model.compute_loss(batch, training=False)
  model.built = True


def plain_copy(build: Callable[[], Any], arrays: Dict[str, Any], checkpoint: str):
  """The model `build()` makes outside any strategy, restored from a trained one's checkpoint
  (its variables whole and local, whatever the strategy split or mirrored)."""
  model = build()
  build_variables(model, arrays)
  status = tf.train.Checkpoint(model=model).read(checkpoint)
  status.expect_partial().assert_existing_objects_matched()
  return model
