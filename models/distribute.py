"""Training on tf.distribute: the strategy a run trains under, its cluster, and what changes.

    default           TensorFlow's default strategy: one process, one device (as before).
    mirrored          one process, synchronous data parallelism over its local devices (GPUs,
                      or CPU devices split with `tf.config.set_logical_device_configuration`).
    multi_worker      synchronous data parallelism over the workers of the TF_CONFIG cluster
                      (`MultiWorkerMirroredStrategy`): every worker runs the same command, and
                      gradients are summed by collective all-reduce.
    parameter_server  the chief runs the command and sends steps to the workers through a
                      `ClusterCoordinator`; variables live on the `ps` tasks, each embedding
                      table split across them (`table_partitioner`); updates are asynchronous.
                      Workers and parameter servers run the same command, which only serves.

The cluster is read from TF_CONFIG, as TensorFlow does: {"cluster": {"chief": [...], "worker":
[...], "ps": [...]}, "task": {"type": "worker", "index": 0}}.

Under a synchronous strategy, a replica's loss must be its share of the global batch's loss:
gradients are *summed* across replicas. `replica_sum` gives the global denominator of a masked
mean, so the summed gradient equals the one a single process would take on the whole batch;
under the default strategy it is the identity, and the arithmetic is unchanged.
"""

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple, cast

import tensorflow as tf
from tensorflow.python.distribute import distribute_lib as tf_distribute_lib
from tensorflow.python.ops import resource_variable_ops

DEFAULT, MIRRORED, MULTI_WORKER, PARAMETER_SERVER = (
    "default", "mirrored", "multi_worker", "parameter_server")
STRATEGIES = (DEFAULT, MIRRORED, MULTI_WORKER, PARAMETER_SERVER)
CLUSTER_STRATEGIES = (MULTI_WORKER, PARAMETER_SERVER)  # read TF_CONFIG; one process per task
DEFAULT_SHARD_BYTES = 256 << 10  # MinSizePartitioner's default: a table below it stays whole


class ClusterError(ValueError):
  """TF_CONFIG does not describe the cluster a strategy needs."""


@dataclasses.dataclass(frozen=True)
class ClusterTask:
  """This process's place in the TF_CONFIG cluster (an empty cluster: a single process)."""
  cluster: Dict[str, List[str]]
  type: Optional[str] = None
  index: int = 0

  @property
  def is_chief(self) -> bool:
    """The task that writes: `chief`, or worker 0 of a cluster without one (TF's rule)."""
    if not self.cluster or self.type is None:
      return True
    if "chief" in self.cluster:
      return self.type == "chief"
    return self.type == "worker" and self.index == 0

  @property
  def name(self) -> str:
    return "local" if self.type is None else f"{self.type}:{self.index}"

  def count(self, job: str) -> int:
    return len(self.cluster.get(job, []))


def cluster_task(environ: Optional[Dict[str, str]] = None) -> ClusterTask:
  """The TF_CONFIG of `environ` (default: this process's), checked."""
  text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
  if not text.strip():
    return ClusterTask({})
  try:
    spec = json.loads(text)
    cluster = {str(job): [str(a) for a in addresses]
               for job, addresses in (spec.get("cluster") or {}).items()}
    task = spec.get("task") or {}
    task_type = task.get("type")
    index = int(task.get("index", 0))
  except (ValueError, TypeError, AttributeError) as error:
    raise ClusterError(f"TF_CONFIG is not valid JSON of the form {{\"cluster\": {{...}}, "
                       f"\"task\": {{\"type\": ..., \"index\": ...}}}}: {error}") from None
  if task_type is not None and not 0 <= index < len(cluster.get(task_type, [])):
    raise ClusterError(f"TF_CONFIG task {task_type}:{index} is not in its cluster "
                       f"{ {job: len(a) for job, a in cluster.items()} }")
  for job, addresses in cluster.items():
    for i, address in enumerate(addresses):
      host_port(address, f"TF_CONFIG cluster {job}:{i}")
  return ClusterTask(cluster, task_type, index)


def host_port(address: str, where: str) -> Tuple[str, int]:
  """('host', port) of 'host:port' ('[::1]:port' too); ClusterError naming `where` if not."""
  host, _, port = address.rpartition(":")
  host = host.strip("[]")
  if not host or not port.isdigit() or not 0 <= int(port) < 65536:
    raise ClusterError(f"{where}: address {address!r} is not host:port with a port in "
                       "0..65535")
  return host, int(port)


# ------------------------------------------------------------------------ bounded waits

DEFAULT_CLUSTER_TIMEOUT = 300.0  # seconds a task waits for the rest of its cluster
POLL_SECONDS = 0.5


def peers(task: ClusterTask) -> List[str]:
  """The addresses this task must reach before its strategy connects: every other task of a
  multi-worker cluster; every worker and ps of a parameter-server chief."""
  own = task.cluster[task.type][task.index] if task.type else None
  return [a for job in sorted(task.cluster) for a in task.cluster[job] if a != own]


def _reachable(address: str, seconds: float = 1.0) -> bool:
  try:
    with socket.create_connection(host_port(address, "TF_CONFIG"), timeout=seconds):
      return True
  except OSError:
    return False


def _hold(address: str) -> Optional[socket.socket]:
  """Listens on this task's own port while it waits, so its peers (waiting the same way) see it
  up; None when the port cannot be held (TensorFlow will say why when it binds it)."""
  sock = socket.socket(socket.AF_INET6 if ":" in host_port(address, "")[0] else socket.AF_INET)
  try:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", host_port(address, "")[1]))
    sock.listen(16)
    return sock
  except OSError:
    sock.close()
    return None


def wait_for_peers(task: ClusterTask, timeout: float) -> None:
  """Waits (in Python: SIGTERM ends it as usual) until every peer of `task` accepts a
  connection; ClusterError naming the unreachable ones after `timeout` seconds (0: forever).
  TensorFlow's own wait for its peers blocks in C++, silent, and swallows SIGTERM."""
  pending = peers(task)
  own = _hold(task.cluster[task.type][task.index]) if task.type else None
  deadline = time.monotonic() + timeout
  try:
    while pending:
      pending = [address for address in pending if not _reachable(address)]
      if pending and timeout and time.monotonic() > deadline:
        raise ClusterError(f"TF_CONFIG task {task.name}: {', '.join(pending)} not reachable "
                           f"after {timeout:g}s (--cluster_timeout); start every task of the "
                           "cluster, or check the addresses")
      if pending:
        time.sleep(POLL_SECONDS)
  finally:
    if own is not None:
      own.close()


def check_cluster(name: str, task: ClusterTask) -> None:
  """Refuses a TF_CONFIG that cannot run strategy `name` (a local strategy needs none)."""
  if name not in STRATEGIES:
    raise ClusterError(f"--strategy={name}: expected one of {', '.join(STRATEGIES)}")
  if name not in CLUSTER_STRATEGIES:
    return
  if not task.cluster or task.type is None:
    raise ClusterError(f"--strategy={name} reads the cluster from TF_CONFIG, which is not set "
                       "(see README, 'Running across machines', or run "
                       "`python -m experiments.cluster`)")
  if name == MULTI_WORKER:
    if task.count("ps") or task.type not in ("chief", "worker"):
      raise ClusterError(f"--strategy=multi_worker: TF_CONFIG has task {task.name} and jobs "
                         f"{sorted(task.cluster)}; it needs `worker` (and at most one `chief`) "
                         "tasks only")
  elif not (task.count("chief") == 1 and task.count("worker") and task.count("ps")):
    raise ClusterError("--strategy=parameter_server: TF_CONFIG needs one `chief`, at least one "
                       f"`worker` and one `ps` task; it has {sorted(task.cluster)}")


# ------------------------------------------------------------------------ sharded tables

_TABLES = threading.local()


@contextlib.contextmanager
def embedding_tables() -> Iterator[None]:
  """Variables created inside are embedding tables: `table_partitioner` may split them."""
  depth = getattr(_TABLES, "depth", 0)
  _TABLES.depth = depth + 1
  try:
    yield
  finally:
    _TABLES.depth = depth


class TablePartitioner:
  """Splits embedding tables (created in `embedding_tables()`) along their rows into at most
  `max_shards` shards of at least `min_shard_bytes` each; every other variable stays whole.

  A dense kernel is read whole by every step, so splitting it would only add round trips; a
  table is gathered a few rows at a time (`tf.nn.embedding_lookup` on a `ShardedVariable` asks
  each parameter server for its rows only).
  """

  def __init__(self, max_shards: int, min_shard_bytes: int = DEFAULT_SHARD_BYTES):
    self._split = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=min_shard_bytes, max_shards=max_shards)

  def __call__(self, shape: tf.TensorShape, dtype: tf.DType, axis: int = 0) -> List[int]:
    if getattr(_TABLES, "depth", 0) == 0:
      return [1] * len(shape)
    return cast(List[int], self._split(shape, dtype, axis))


# ------------------------------------------------------------------------ strategies


def make_strategy(name: str, task: ClusterTask,
                  min_shard_bytes: int = DEFAULT_SHARD_BYTES) -> tf.distribute.Strategy:
  """The strategy of --strategy=`name` for this process (a worker or ps task of a
  parameter-server cluster does not make one: it `serve`s)."""
  check_cluster(name, task)
  if name == DEFAULT:
    return tf.distribute.get_strategy()
  if name == MIRRORED:
    return tf.distribute.MirroredStrategy(
        cross_device_ops=tf.distribute.ReductionToOneDevice()
        if not tf.config.list_physical_devices("GPU") else None)
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  if name == MULTI_WORKER:
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING,
        bytes_per_pack=32 << 20)
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver,
                                                     communication_options=options)
  return tf.distribute.ParameterServerStrategy(
      resolver, variable_partitioner=TablePartitioner(task.count("ps"), min_shard_bytes))


def serve(task: ClusterTask) -> None:
  """Runs this worker or ps task's server until the process is killed (it never returns)."""
  server = tf.distribute.Server(tf.train.ClusterSpec(task.cluster), job_name=task.type,
                                task_index=task.index, protocol="grpc", start=True)
  server.join()


def serves_only(name: str, task: ClusterTask) -> bool:
  """Whether this process only serves: a worker or ps task of a parameter-server cluster."""
  return name == PARAMETER_SERVER and task.type in ("worker", "ps")


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
  return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def synchronous_replicas() -> int:
  """Replicas whose gradients are summed each step under the current strategy (1 without)."""
  strategy = tf.distribute.get_strategy()
  return 1 if is_parameter_server(strategy) else int(strategy.num_replicas_in_sync)


# ------------------------------------------------------------------------ replica arithmetic


def replica_sum(value: tf.Tensor) -> tf.Tensor:
  """`value` summed over the replicas of this step (itself outside a multi-replica step)."""
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return value
  return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(value))


def replica_count() -> int:
  """Replicas of this step (1 outside a multi-replica step)."""
  context = tf.distribute.get_replica_context()
  return 1 if context is None else int(context.num_replicas_in_sync)


def is_default(strategy: tf.distribute.Strategy) -> bool:
  """Whether `strategy` is TensorFlow's default one (no distribution at all)."""
  return strategy is tf_distribute_lib._get_default_strategy()


def local_variable(initial_value: Any, **kwargs: Any) -> tf.Variable:
  """A variable of this process alone, whatever strategy is in scope: bookkeeping that Python
  reads and writes (not trained, not mirrored; a multi-worker strategy would broadcast its
  initial value from worker 0, which crashes for an empty one)."""
  return resource_variable_ops.ResourceVariable(initial_value, **kwargs)
