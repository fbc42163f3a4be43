"""Where independent tasks run: in this process (the default), or as Ray tasks.

World generation (one task per user shard), the replay (contiguous ranges of its resumable
chunks) and the paper study (one task per stage run) are all independent tasks whose results
are gathered in order. `Engine.map` runs them: with `--runner=local` it is a plain loop in this
process, exactly what the commands did before; with `--runner=ray` each task is a Ray task, on
a Ray instance this process starts (`--ray_address=`, `--ray_num_cpus` cores, 0 = all) or on a
cluster it joins (`--ray_address=auto` or `ray://host:port`).

Ray is the optional `cluster` extra (`pip install .[cluster]`) and is imported only when a Ray
engine starts, so nothing else pays for it. Workers get the project on their path (PYTHONPATH
for a local instance; the project directory as Ray's `working_dir` on a cluster) and the
driver's TF_USE_LEGACY_KERAS / TF_CPP_MIN_LOG_LEVEL (set in one place, `models/__init__.py`).
Tasks read and write the world and run directories by path: on a cluster those must be on a
filesystem every node mounts (NFS, or an object store mounted as one).

A failed task surfaces as one `UserError` line that names it (`shard 3: ...`); the remote
traceback goes to the log.
"""

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from absl import logging

from data.plumbing import waits
from data.plumbing.command import UserError

LOCAL, RAY = "local", "ray"
RUNNERS = (LOCAL, RAY)
DEFAULT_RAY_TIMEOUT = 60.0  # seconds to wait for a cluster at --ray_address to answer
# The checkout holding the packages: this file is <root>/data/plumbing/engine.py.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Variables a worker takes from the driver (the TensorFlow switches models/__init__ sets).
INHERITED_ENV = ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL")
# Not shipped to a cluster with the code.
UPLOAD_EXCLUDES = [".venv", ".git", "reports", "work", "*.egg-info", "__pycache__"]


@dataclasses.dataclass(frozen=True)
class EngineConfig:
  """Where a command's independent tasks run; entry points define one flag per field."""
  runner: str = dataclasses.field(default=LOCAL, metadata={
      "help": "local: in this process, one task after another (the default); ray: as Ray "
              "tasks on a local Ray instance or a cluster (--ray_address).",
      "choices": RUNNERS})
  ray_address: str = dataclasses.field(default="", metadata={
      "help": "With --runner=ray: empty = start a Ray instance on this machine; 'auto' or "
              "ray://host:port = join that cluster (paths must be on a shared filesystem)."})
  ray_num_cpus: int = dataclasses.field(default=0, metadata={
      "help": "Cores of the local Ray instance (0: every core). Ignored on a cluster."})
  ray_timeout: float = dataclasses.field(default=DEFAULT_RAY_TIMEOUT, metadata={
      "help": "Seconds to wait for the cluster at --ray_address to answer before giving up "
              "with one line (0: wait forever)."})

  def __post_init__(self) -> None:
    if self.runner not in RUNNERS:
      raise UserError(f"--runner must be one of {', '.join(RUNNERS)}; got {self.runner!r}")
    if self.ray_num_cpus < 0:
      raise UserError(f"--ray_num_cpus must be at least 0; got {self.ray_num_cpus}")
    if self.ray_timeout < 0:
      raise UserError(f"--ray_timeout must be at least 0 (0: forever); got {self.ray_timeout}")


def runtime_env(config: EngineConfig) -> Dict[str, Any]:
  """What every Ray worker needs: the project importable, the driver's TensorFlow switches."""
  env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
  if config.ray_address:  # a cluster: ship the code; the nodes have the dependencies
    return {"working_dir": PROJECT_ROOT, "excludes": UPLOAD_EXCLUDES, "env_vars": env}
  path = [PROJECT_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
  env["PYTHONPATH"] = os.pathsep.join(path)
  return {"env_vars": env}


def start_ray(config: EngineConfig) -> None:
  """Starts (or joins) Ray as `config` says; raises UserError if Ray is not installed."""
  import_ray_or_fail()
  import ray
  options: Dict[str, Any] = dict(runtime_env=runtime_env(config), include_dashboard=False)
  if not config.ray_address:
    if config.ray_num_cpus:
      options["num_cpus"] = config.ray_num_cpus
    ray.init(**options)
    return
  # Joining a cluster: Ray retries an address that does not answer for ever, in C++, with
  # SIGTERM swallowed; `bounded` gives it --ray_timeout and SIGTERM back.
  options["address"] = config.ray_address
  try:
    with waits.bounded(f"connecting to the Ray cluster at --ray_address={config.ray_address}",
                       config.ray_timeout, "--ray_timeout", restore_sigterm=False):
      ray.init(**options)
  except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    raise UserError(f"--ray_address={config.ray_address}: cannot join a Ray cluster there "
                    f"({first_line}); start one (`ray start --head`) or fix the address"
                    ) from None


class Engine:
  """Runs independent tasks and gathers their results in order. Use as a context manager: a
  Ray engine starts Ray on entry (unless this process already did) and stops what it
  started on exit."""

  def __init__(self, config: Optional[EngineConfig] = None):
    self.config = config or EngineConfig()
    self._started = False

  @property
  def is_local(self) -> bool:
    return self.config.runner == LOCAL

  def __enter__(self) -> "Engine":
    if not self.is_local:
      import_ray_or_fail()
      import ray
      if not ray.is_initialized():  # a test (or a caller) may have started it already
        start_ray(self.config)
        self._started = True
    return self

  def __exit__(self, *exc_info: object) -> None:
    if self._started:
      import ray
      ray.shutdown()
      self._started = False

  def parallelism(self) -> int:
    """Tasks that can run at once: 1 locally, the Ray cluster's CPUs otherwise."""
    if self.is_local:
      return 1
    import ray
    return max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]

  def map(self, fn: Callable[..., Any], items: Sequence[Any], label: Callable[[Any], str],
          common: Tuple[Any, ...] = (), after: Optional[Sequence[Sequence[int]]] = None,
          resources: Optional[Dict[str, float]] = None,
          done: Optional[Callable[[int, Any], None]] = None) -> List[Any]:
    """[fn(*common, item) for item in items], in the order of `items`.

    `fn` must be a module-level function (a Ray worker imports it by name); `common` is
    shipped to the workers once. `after[i]`: indices of the items whose task must finish
    before item i's starts. `resources`: Ray's per-task options (num_cpus, memory) and
    max_calls (tasks a Ray worker process runs before it is replaced).
    `done(i, result)` is called in the driver as each task finishes. `label(item)` names an
    item in errors (e.g. "shard 3").
    """
    after = after or [[] for _ in items]
    order = dependency_order(after)
    if self.is_local:
      results: List[Any] = [None] * len(items)
      for i in order:
        results[i] = fn(*common, items[i])
        if done:
          done(i, results[i])
      return results
    return _ray_map(fn, items, label, common, after, order, resources or {}, done)


def import_ray_or_fail() -> None:
  """Raises UserError, saying how to install it, when Ray is not installed."""
  try:
    import ray  # noqa: F401
  except ImportError:
    raise UserError("--runner=ray needs Ray: pip install -c constraints.txt -e '.[cluster]'"
                    ) from None


def dependency_order(after: Sequence[Sequence[int]]) -> List[int]:
  """The indices with every item after the items it waits for (declared order otherwise)."""
  order: List[int] = []
  placed: Set[int] = set()
  while len(order) < len(after):
    ready = [i for i in range(len(after)) if i not in placed and set(after[i]) <= placed]
    if not ready:
      waiting = sorted(set(range(len(after))) - placed)
      raise ValueError(f"tasks {waiting} wait on each other: the dependencies have a cycle")
    order += ready
    placed.update(ready)
  return order


def _call(fn: Callable[..., Any], n_args: int, *args: Any) -> Any:
  """A Ray task: fn on its first `n_args` arguments; the rest are the results of the tasks it
  waited for (passed only so that Ray starts it after them)."""
  return fn(*args[:n_args])


def _ray_map(fn: Callable[..., Any], items: Sequence[Any], label: Callable[[Any], str],
             common: Tuple[Any, ...], after: Sequence[Sequence[int]], order: Sequence[int],
             resources: Dict[str, float],
             done: Optional[Callable[[int, Any], None]]) -> List[Any]:
  import ray
  _check_feasible(resources)
  # max_calls (how many tasks a worker process runs before Ray replaces it) is the remote
  # function's own setting; the others are per-call options.
  options = {k: v for k, v in resources.items() if k != "max_calls"}
  function = (ray.remote(max_calls=int(resources["max_calls"]))(_call)
              if "max_calls" in resources else ray.remote(_call))
  remote = function.options(**options) if options else function
  shared = [ray.put(value) for value in common]
  refs: List[Any] = [None] * len(items)
  for i in order:
    refs[i] = remote.remote(fn, len(common) + 1, *shared, items[i], *[refs[j] for j in after[i]])
  index = {ref: i for i, ref in enumerate(refs)}
  results: List[Any] = [None] * len(items)
  pending = list(refs)
  while pending:
    finished, pending = ray.wait(pending, num_returns=1)
    i = index[finished[0]]
    try:
      results[i] = ray.get(finished[0])
    except Exception as error:  # noqa: BLE001 (every task failure becomes one named line)
      for ref in pending:
        ray.cancel(ref)
      raise _task_error(label(items[i]), error) from None
    if done:
      done(i, results[i])
  return results


def _task_error(name: str, error: Exception) -> UserError:
  """One line naming the task; the remote traceback goes to the log."""
  import ray.exceptions
  logging.error("%s failed:\n%s", name, error)
  cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) else error
  if isinstance(cause, ray.exceptions.RayTaskError):  # a task it waited for failed
    cause = cause.cause
  if isinstance(cause, (UserError, ValueError, FileNotFoundError, FileExistsError)):
    message = str(cause).strip()
  else:
    message = f"{type(cause).__name__}: {str(cause).strip() or 'no message'}"
  return UserError(f"{name}: {message}")


def _check_feasible(resources: Dict[str, float]) -> None:
  """Refuses a task no Ray node could ever start (Ray would wait for it forever)."""
  import ray
  nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
  memory = resources.get("memory", 0)
  if memory and not any(n.get("memory", 0) >= memory for n in nodes):
    largest = max((n.get("memory", 0) for n in nodes), default=0)
    raise UserError(f"a task asks Ray for {memory / 2 ** 30:.1f} GB of memory, more than any "
                    f"node offers ({largest / 2 ** 30:.1f} GB); lower --max_worker_gb")
