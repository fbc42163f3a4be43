"""The model dir's layout and the facts a finished run leaves in it.

A stage run writes `MODEL_DIR/<stage>/<variant>/` holding `saved_model/` (the serving export),
`checkpoints/` (resumable training state), `tensorboard/` and `metrics.json`, written last.
`MODEL_DIR/world.json` pins the model dir to one world, so models of different worlds are never
mixed. A run's `config_key` digests its settings and the identity of every export it read (a
coarse pfd_md student's fine CTR teacher, say), so `--reuse` never returns a run made from
another teacher.

Resumable state (`checkpoints/`, a pre-trained teacher's `teacher/`) belongs to one config key,
recorded in `checkpoints.json`: a run with another key discards it and starts fresh instead of
adopting another configuration's weights. A run holds `.lock` (fcntl) on its stage dir, so two
runs never write into the same one.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional

from absl import logging

from data.plumbing import files
from models import export
from stages import config as config_lib

StageError = config_lib.StageError
Upstream = Mapping[str, Optional[str]]  # "fine/ctr/baseline" -> its config_key (None: absent)


def stage_dir(model_dir: str, stage: str, variant: str) -> str:
  """MODEL_DIR/<stage>/<variant>; `stage` may be nested, e.g. 'fine/ctr'."""
  return os.path.join(model_dir, *stage.split("/"), variant)


def export_path(model_dir: str, stage: str, variant: str) -> str:
  return os.path.join(stage_dir(model_dir, stage, variant), "saved_model")


def check_model_dir(model_dir: str, world) -> bool:
  """Refuses a model dir that is a file or holds another world's models (writes nothing);
  True when it is already pinned to `world`."""
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise StageError(f"--model_dir={model_dir} is a file, not a directory")
  path = os.path.join(model_dir, "world.json")
  if not os.path.exists(path):
    return False
  held = files.read_json(path).get("world_hash")
  if held != world.world_hash:
    raise StageError(f"--model_dir={model_dir} holds models of another world "
                     f"(world_hash {held} in {path}, this world is {world.world_hash}); "
                     "use a fresh --model_dir")
  return True


def claim_model_dir(model_dir: str, world) -> None:
  """Pins MODEL_DIR to one world; refuses a model dir that holds another world's models."""
  if check_model_dir(model_dir, world):
    return
  os.makedirs(model_dir, exist_ok=True)
  path = os.path.join(model_dir, "world.json")
  files.write_json(path, {"world_hash": world.world_hash,
                          "world_dir": os.path.abspath(world.world_dir)})


def require_stage(model_dir: str, stage: str, variant: str, command: str) -> str:
  """The export dir of a stage this one depends on, or an error naming the command to run."""
  path = export_path(model_dir, stage, variant)
  blocked = next((p for p in (model_dir, stage_dir(model_dir, stage, variant), path)
                  if os.path.isdir(p) and not os.access(p, os.R_OK | os.X_OK)), None)
  if blocked:
    raise PermissionError(13, "permission denied", blocked)
  if not os.path.exists(os.path.join(path, "saved_model.pb")):
    raise StageError(f"{stage} model '{variant}' not found at {path}; train it first with "
                     f"`{command}`")
  return path


def read_export_meta(path: str) -> Dict[str, Any]:
  """An export's meta file (pfd_serving.json), or an error saying it is not an export."""
  meta_path = os.path.join(path, export.META_FILE)
  if not os.path.isfile(meta_path):
    raise StageError(f"{path} is not a serving export of this project (no {export.META_FILE}, "
                     "so what trained it cannot be checked); retrain it with its stage command")
  meta = files.read_json(meta_path)
  if not isinstance(meta, dict):
    raise StageError(f"{meta_path} is not a JSON object; retrain the model")
  return meta


def identity_problems(meta: Dict[str, Any], stage: str, variant: Optional[str] = None,
                      world_hash: Optional[str] = None) -> List[str]:
  """How an export's recorded identity (its meta: stage, variant, world) differs from what it
  is asked to be; empty when it is that export. A renamed or copied export dir shows here."""
  extra = meta.get("extra") or {}
  problems = []
  if meta.get("stage") != stage:
    problems.append(f"it records stage {meta.get('stage')!r}, not {stage!r}")
  if variant is not None and extra.get("variant") != variant:
    problems.append(f"it records variant {extra.get('variant')!r}, not {variant!r} (a renamed "
                    "or copied export dir?)")
  if world_hash is not None and extra.get("world_hash") != world_hash:
    held = str(extra.get("world_hash"))[:12]
    problems.append(f"it was trained on another world (world_hash {held}..., this world "
                    f"{world_hash[:12]}...)")
  for name in ("world_hash", "train_days", "variant"):
    if name not in extra:
      problems.append(f"it records no {name}")
  return problems


def check_export_identity(path: str, meta: Dict[str, Any], stage: str, variant: str,
                          world_hash: Optional[str], asked: str) -> None:
  """Refuses an export that is not the `stage`/`variant` export of this world; `asked` says
  which flag asked for it (e.g. '--cvr_variant=baseline')."""
  problems = identity_problems(meta, stage, variant, world_hash)
  if problems:
    raise StageError(f"{asked}: the export at {path} is not the {stage} '{variant}' model of "
                     f"this world: {'; '.join(problems)}; retrain it with its stage command")


def export_identity(model_dir: str, stage: str, variant: str) -> Optional[str]:
  """The config_key recorded in an export's meta (None when there is no export)."""
  meta = os.path.join(export_path(model_dir, stage, variant), export.META_FILE)
  if not os.path.exists(meta):
    return None
  return (files.read_json(meta).get("extra") or {}).get("config_key")


def config_key(config: config_lib.TrainConfig, upstream: Upstream) -> str:
  """A digest of everything that changes the trained model: the settings (not where the run
  goes) and the identity of each export it reads."""
  fields = config_lib.key_values(config)
  if upstream:
    fields["upstream"] = dict(upstream)
  blob = json.dumps(files.json_safe(fields), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finished_metrics(out_dir: str, key: str) -> Optional[Dict[str, Any]]:
  """The metrics of a finished run in `out_dir` with this config key, else None."""
  path = os.path.join(out_dir, "metrics.json")
  if not os.path.exists(path):
    return None
  metrics = files.read_json(path)
  if metrics.get("config_key") != key:
    return None
  logging.info("reusing the finished run in %s (same configuration)", out_dir)
  return metrics


def run_facts(world, config: config_lib.TrainConfig, upstream: Upstream,
              teacher: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """What produced a model (world, stage, settings, exports read, its teacher), for
  metrics.json and the export's meta: its identity, which replay, audit and a student read."""
  facts: Dict[str, Any] = {"world_hash": world.world_hash, "stage": config.stage,
                           "config_key": config_key(config, upstream)}
  facts.update(config_lib.key_values(config))
  if config.variant == "baseline":
    facts["mode"] = None
  facts["upstream"] = dict(upstream)
  if teacher is not None:
    facts["teacher"] = dict(teacher)
  return facts


RESUMABLE_STATE = ("checkpoints", "teacher")  # what a killed run resumes from, per stage dir
STATE_KEY_FILE = "checkpoints.json"
LOCK_FILE = ".lock"


def claim_resumable_state(out_dir: str, key: str) -> None:
  """Keeps the stage dir's resumable state only if it belongs to config `key`; else drops it."""
  path = os.path.join(out_dir, STATE_KEY_FILE)
  held = files.read_json(path).get("config_key") if os.path.exists(path) else None
  present = [name for name in RESUMABLE_STATE if os.path.exists(os.path.join(out_dir, name))]
  if held != key:
    if present:
      logging.warning("%s holds training state of another configuration (config_key %s, this "
                      "run is %s); starting fresh", out_dir, held, key)
    for name in present:
      files.remove_tree(os.path.join(out_dir, name))
    files.write_json(path, {"config_key": key})
  elif present:
    logging.info("resuming from the training state in %s (same configuration)", out_dir)


@contextlib.contextmanager
def stage_lock(out_dir: str) -> Iterator[None]:
  """Holds an exclusive lock on the stage dir; a second run into it is refused."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, LOCK_FILE)
  with open(path, "a+") as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      handle.seek(0)
      holder = handle.read().strip() or "another process"
      raise StageError(f"{out_dir} is in use by another run ({holder} holds {path}); wait for "
                       "it to finish, or use another --model_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)
