"""The bad-input table's harness: a row (`Case`), how it runs, and the mutations rows share.

Each row is one command line against a fresh case directory: the command, a mutation of its
inputs (a damaged world, a file where a directory belongs, a renamed export...), the flags, the
exit status it must end with and a substring its message must contain (the flag, file, column
or field at fault). `check_case` runs it in-process (the command's `run()` with a stubbed
`command.start`) and proves the refusal changed nothing: the case directory holds the same
files with the same bytes after the command as before (nothing written, half-written or
removed), and no traceback was printed. The rows live in tests/test_bad_input*.py, grouped by
surface; `python -m tests.reliability_table` writes docs/reliability.md's table from them.
"""

import contextlib
import dataclasses
import hashlib
import importlib
import io as text_io
import os
import shutil
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from absl import flags
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.plumbing import command
from data.plumbing import files
from data.world import io
from models import export
from stages import layout

Mutation = Callable[[str], None]  # receives the case directory


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  command: str              # module whose run() is the command
  args: Sequence[str]       # flags; {world}, {models}, {late}, {run}, {report}, {case} filled in
  code: int                 # expected exit status
  message: str              # a substring of the one-line error
  mutate: Optional[Mutation] = None
  world: bool = True        # copy the tiny world to {case}/world first
  leaves: Sequence[str] = ()  # complete small files a run refused late may leave (not partial)
  finding: str = ""         # the issue item it answers, e.g. "22.4"
  env: Mapping[str, str] = dataclasses.field(default_factory=dict)  # set while it runs
  models: bool = False      # copy trained tiny models to {case}/models and {case}/late first


# ----------------------------------------------------------------------------- mutations


def rehash_manifest(world_dir: str) -> None:
  """Rewrites the manifest's hashes as a careful tamperer would (so only content checks see)."""
  path = os.path.join(world_dir, io.MANIFEST)
  manifest = files.read_json(path)
  for relative in manifest["files"]:
    full = os.path.join(world_dir, relative)
    manifest["files"][relative] = {"sha256": io.sha256_file(full),
                                   "bytes": os.path.getsize(full)}
  manifest["world_hash"] = io.world_hash(manifest["config"], manifest["files"])
  files.write_json(path, manifest, indent=1)


def edit_manifest(edit: Callable[[dict], None]) -> Mutation:
  def mutate(case_dir: str) -> None:
    path = os.path.join(case_dir, "world", io.MANIFEST)
    manifest = files.read_json(path)
    edit(manifest)
    files.write_json(path, manifest, indent=1)
  return mutate


def relabel_dwell_as_serving(manifest: dict) -> None:
  for row in manifest["schema"]:
    if row["name"] == "dwell_seconds":
      row["availability"] = "serving"


def first_log(world_dir: str) -> str:
  manifest = files.read_json(os.path.join(world_dir, io.MANIFEST))
  return next(p for p in sorted(manifest["files"]) if p.startswith("logs/"))


def set_column(relative: Optional[str], name: str, change: Callable[[np.ndarray], np.ndarray],
                rehash: bool = True) -> Mutation:
  """Rewrites one column of a world file (the first log part when `relative` is None)."""
  def mutate(case_dir: str) -> None:
    world_dir = os.path.join(case_dir, "world")
    path = os.path.join(world_dir, relative or first_log(world_dir))
    table = pq.read_table(path)
    values = change(table.column(name).to_numpy().copy())
    index = table.column_names.index(name)
    table = table.set_column(index, name, pa.array(values))
    io.write_table(table, path)
    if rehash:
      rehash_manifest(world_dir)
  return mutate


def nan_first(values: np.ndarray) -> np.ndarray:
  values[0] = np.nan
  return values


def negate_last(values: np.ndarray) -> np.ndarray:
  values[-1] = -abs(values[-1]) - 1.0
  return values


def flip_bit(relative: str) -> Mutation:
  """One bit of the file's middle flipped (same size)."""
  def mutate(case_dir: str) -> None:
    path = os.path.join(case_dir, "world", relative)
    with open(path, "r+b") as f:
      f.seek(os.path.getsize(path) // 2)
      byte = f.read(1)[0]
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte ^ 0x10]))
  return mutate


def write(relative: str, text: str) -> Mutation:
  def mutate(case_dir: str) -> None:
    path = os.path.join(case_dir, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)
  return mutate


def pin_models_to_world(case_dir: str) -> None:
  files.write_json(os.path.join(case_dir, "models", "world.json"),
                   {"world_hash": files.read_json(os.path.join(case_dir, "world", io.MANIFEST))
                    ["world_hash"], "world_dir": os.path.join(case_dir, "world")})


def garbage_export(stage: str, variant: str) -> Mutation:
  """An export whose meta records the right identity but whose saved_model.pb is garbage."""
  def mutate(case_dir: str) -> None:
    pin_models_to_world(case_dir)
    path = layout.export_path(os.path.join(case_dir, "models"), stage, variant)
    files.remove_tree(path)
    os.makedirs(path)
    world_hash = files.read_json(os.path.join(case_dir, "world", io.MANIFEST))["world_hash"]
    files.write_json(os.path.join(path, export.META_FILE), {
        "stage": stage.replace("/", "_"), "inputs": {}, "extra": {
            "variant": variant, "world_hash": world_hash, "train_days": [1, 2, 3]}})
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
      f.write(b"this is not a protocol buffer" * 10)
  return mutate


def finished_run(case_dir: str, summary_text: str = "{not json") -> None:
  write("run/summary.json", summary_text)(case_dir)


def edit_meta(export_stage: str, export_variant: str, **extra) -> Mutation:
  """Sets fields of an export's recorded identity (its meta's `extra`)."""
  def mutate(case_dir: str) -> None:
    models = os.path.join(case_dir, "models")
    path = os.path.join(layout.export_path(models, export_stage, export_variant),
                        export.META_FILE)
    meta = files.read_json(path)
    meta["extra"].update(extra)
    files.write_json(path, meta, indent=1)
  return mutate


def finished_stage_run(stage: str, variant: str) -> Mutation:
  """A stage dir as a finished run leaves it: checkpoints, their key, metrics.json."""
  def mutate(case_dir: str) -> None:
    out_dir = layout.stage_dir(os.path.join(case_dir, "models"), stage, variant)
    final = os.path.join(out_dir, "checkpoints", "final")
    os.makedirs(final)
    with open(os.path.join(final, "ckpt.index"), "wb") as f:
      f.write(b"a finished run's weights")
    files.write_json(os.path.join(out_dir, layout.STATE_KEY_FILE), {"config_key": "previous"})
    files.write_json(os.path.join(out_dir, "metrics.json"), {"config_key": "previous"})
  return mutate


def one_row_table() -> pa.Table:
  return pa.table({"request_id": pa.array([1], pa.int64())})


def mislabelled_run(case_dir: str) -> None:
  """A finished replay whose --cvr_variant=baseline served an export that records 'pfd' (its
  dir renamed before the replay ran)."""
  run = os.path.join(case_dir, "run")
  os.makedirs(run)
  files.write_parquet(os.path.join(run, "per_request.parquet"), one_row_table())
  files.write_json(os.path.join(run, "summary.json"), {
      "format": 1, "label": "coarse=pfd_md,cvr=baseline", "world_hash": "w", "metrics": {},
      "config": {"coarse_variant": "pfd_md", "cvr_variant": "baseline",
                 "ctr_variant": "baseline"},
      "models": {"fine_cvr": {"variant": "pfd", "path": "/m/fine/cvr/baseline/saved_model"},
                 "coarse": {"variant": "pfd_md"}, "fine_ctr": {"variant": "baseline"}}})


# ----------------------------------------------------------------------------- running a row


def run_in_process(module_name: str, argv: Sequence[str]):
  """Runs a command's run() with argv; returns (exit status, stdout, stderr)."""
  module = importlib.import_module(module_name)
  before = set(flags.FLAGS)
  stdout, stderr = text_io.StringIO(), text_io.StringIO()

  def start(main):
    try:
      remaining = flags.FLAGS([module_name, *argv])
    except flags.Error as error:  # what absl's app.run does with a flag it cannot parse
      stderr.write(f"FATAL Flags parsing error: {error}\n")
      raise SystemExit(1)
    main(remaining)

  original = command.start
  command.start = start
  code = 0
  try:
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
      try:
        module.run()
      except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
  finally:
    command.start = original
    flags.FLAGS.unparse_flags()
    for name in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, name)
  return code, stdout.getvalue(), stderr.getvalue()


def snapshot(root: str) -> Dict[str, str]:
  """Every file under `root` (but stage-dir locks) with a digest of its bytes."""
  found = {}
  for directory, _, names in os.walk(root):
    for name in names:
      if name == layout.LOCK_FILE:
        continue
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return found


def prepare(case: Case, tiny_world_dir: str, case_dir: str,
            models_dir: Optional[str] = None) -> List[str]:
  os.makedirs(case_dir)
  if case.world:
    shutil.copytree(tiny_world_dir, os.path.join(case_dir, "world"))
  if case.models:  # trained models: MODELS_ROOT/funnel (every stage), MODELS_ROOT/late
    for name, target in (("funnel", "models"), ("late", "late")):
      shutil.copytree(os.path.join(models_dir, name), os.path.join(case_dir, target))
  if case.mutate:
    case.mutate(case_dir)
  places = dict(case=case_dir, world=os.path.join(case_dir, "world"),
                late=os.path.join(case_dir, "late"),
                models=os.path.join(case_dir, "models"), run=os.path.join(case_dir, "run"),
                report=os.path.join(case_dir, "report"))
  return [arg.format(**places) for arg in case.args]




@contextlib.contextmanager
def environment(values: Mapping[str, str]):
  """`values` set in os.environ while the block runs."""
  saved = {name: os.environ.get(name) for name in values}
  os.environ.update(values)
  try:
    yield
  finally:
    for name, value in saved.items():
      if value is None:
        os.environ.pop(name, None)
      else:
        os.environ[name] = value


def check_case(case: Case, tiny_world_dir: str, case_dir: str,
               models_dir: Optional[str] = None) -> None:
  """Runs `case` and asserts its exit status, message, no traceback and no change on disk."""
  argv = prepare(case, tiny_world_dir, case_dir, models_dir)
  before = snapshot(case_dir)
  with environment(case.env):
    code, stdout, stderr = run_in_process(case.command, argv)
  output = stdout + stderr  # data.verify and experiments.audit list problems on stdout
  assert code == case.code, output
  assert case.message.replace("{case}", case_dir) in output, output
  assert "Traceback" not in output, output
  after = snapshot(case_dir)
  for name in case.leaves:
    after.pop(name, None)
  assert after == before  # nothing written, half-written or removed
