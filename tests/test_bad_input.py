"""A hostile but fair user: every command refuses bad input in one line and writes nothing.

Each row of CASES is one command line against a fresh directory: the command, a mutation of its
inputs (a damaged world, a file where a directory belongs, a held lock...), the flags, the exit
status it must end with and a substring its message must contain (the flag, file, column or
field at fault). Every case also proves the refusal wrote nothing: the case directory holds the
same files (with the same bytes) after the command as before, and no traceback was printed.
Commands run in-process (their `run()` with a stubbed `command.start`), which keeps the table
fast; docs/reliability.md lists the same cases with their outcomes.
"""

import contextlib
import dataclasses
import hashlib
import importlib
import io as text_io
import json
import os
import shutil
from typing import Callable, Dict, List, Optional, Sequence

from absl import flags
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data import command
from data import files
from data import io
from models import export
from stages import layout

Mutation = Callable[[str], None]  # receives the case directory


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  command: str              # module whose run() is the command
  args: Sequence[str]       # flags; {world}, {models}, {run}, {report}, {case} are filled in
  code: int                 # expected exit status
  message: str              # a substring of the one-line error
  mutate: Optional[Mutation] = None
  world: bool = True        # copy the tiny world to {case}/world first
  leaves: Sequence[str] = ()  # complete small files a run refused late may leave (not partial)


# ----------------------------------------------------------------------------- mutations


def _rehash(world_dir: str) -> None:
  """Rewrites the manifest's hashes as a careful tamperer would (so only content checks see)."""
  path = os.path.join(world_dir, io.MANIFEST)
  manifest = files.read_json(path)
  for relative in manifest["files"]:
    full = os.path.join(world_dir, relative)
    manifest["files"][relative] = {"sha256": io.sha256_file(full),
                                   "bytes": os.path.getsize(full)}
  manifest["world_hash"] = io.world_hash(manifest["config"], manifest["files"])
  files.write_json(path, manifest, indent=1)


def _edit_manifest(edit: Callable[[dict], None]) -> Mutation:
  def mutate(case_dir: str) -> None:
    path = os.path.join(case_dir, "world", io.MANIFEST)
    manifest = files.read_json(path)
    edit(manifest)
    files.write_json(path, manifest, indent=1)
  return mutate


def _relabel_dwell_as_serving(manifest: dict) -> None:
  for row in manifest["schema"]:
    if row["name"] == "dwell_seconds":
      row["availability"] = "serving"


def _first_log(world_dir: str) -> str:
  manifest = files.read_json(os.path.join(world_dir, io.MANIFEST))
  return next(p for p in sorted(manifest["files"]) if p.startswith("logs/"))


def _set_column(relative: Optional[str], name: str, change: Callable[[np.ndarray], np.ndarray],
                rehash: bool = True) -> Mutation:
  """Rewrites one column of a world file (the first log part when `relative` is None)."""
  def mutate(case_dir: str) -> None:
    world_dir = os.path.join(case_dir, "world")
    path = os.path.join(world_dir, relative or _first_log(world_dir))
    table = pq.read_table(path)
    values = change(table.column(name).to_numpy().copy())
    index = table.column_names.index(name)
    table = table.set_column(index, name, pa.array(values))
    io.write_table(table, path)
    if rehash:
      _rehash(world_dir)
  return mutate


def _nan_first(values: np.ndarray) -> np.ndarray:
  values[0] = np.nan
  return values


def _negate_last(values: np.ndarray) -> np.ndarray:
  values[-1] = -abs(values[-1]) - 1.0
  return values


def _flip_bit(relative: str) -> Mutation:
  """One bit of the file's middle flipped (same size)."""
  def mutate(case_dir: str) -> None:
    path = os.path.join(case_dir, "world", relative)
    with open(path, "r+b") as f:
      f.seek(os.path.getsize(path) // 2)
      byte = f.read(1)[0]
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte ^ 0x10]))
  return mutate


def _write(relative: str, text: str) -> Mutation:
  def mutate(case_dir: str) -> None:
    path = os.path.join(case_dir, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)
  return mutate


def _pin_models_to_world(case_dir: str) -> None:
  files.write_json(os.path.join(case_dir, "models", "world.json"),
                   {"world_hash": files.read_json(os.path.join(case_dir, "world", io.MANIFEST))
                    ["world_hash"], "world_dir": os.path.join(case_dir, "world")})


def _garbage_export(stage: str, variant: str) -> Mutation:
  """An export whose meta is valid JSON but whose saved_model.pb is garbage."""
  def mutate(case_dir: str) -> None:
    _pin_models_to_world(case_dir)
    path = layout.export_path(os.path.join(case_dir, "models"), stage, variant)
    os.makedirs(path)
    files.write_json(os.path.join(path, export.META_FILE), {"extra": {}})
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
      f.write(b"this is not a protocol buffer" * 10)
  return mutate


def _finished_run(case_dir: str, summary_text: str = "{not json") -> None:
  _write("run/summary.json", summary_text)(case_dir)


# ----------------------------------------------------------------------------- the table

FINE = "stages.fine"
COARSE = "stages.coarse"
RETRIEVAL = "stages.retrieval"
REPLAY = "experiments.replay"
STAGE = ["--world_dir={world}", "--model_dir={models}"]
REPLAY_ARGS = ["--world_dir={world}", "--model_dir={models}", "--run_dir={run}"]
NAN_PRICE = _set_column("items.parquet", "item_price", _nan_first)

CASES: List[Case] = [
    # data.generate
    Case("generate: no --world_dir", "data.generate", ["--preset=tiny"], 2,
         "--world_dir is required", world=False),
    Case("generate: world_dir is a file", "data.generate",
         ["--world_dir={case}/file", "--preset=tiny"], 2, "is not a directory",
         _write("file", "x"), world=False),
    Case("generate: a directory of other files", "data.generate",
         ["--world_dir={case}/notes", "--preset=tiny"], 2, "is not a world",
         _write("notes/todo.txt", "x"), world=False),
    Case("generate: a world of another config", "data.generate",
         ["--world_dir={world}", "--preset=tiny", "--seed=1"], 2, "--overwrite"),
    Case("generate: a same-size bit flip in items", "data.generate",
         ["--world_dir={world}", "--preset=tiny", "--seed=0"], 2, "items.parquet",
         _flip_bit("items.parquet")),
    Case("generate: manifest not JSON", "data.generate",
         ["--world_dir={world}", "--preset=tiny"], 2, "manifest.json",
         _write("world/manifest.json", "{")),
    Case("generate: unknown preset", "data.generate", ["--world_dir={case}/w", "--preset=huge"],
         1, "preset", world=False),
    Case("generate: zero users", "data.generate",
         ["--world_dir={case}/w", "--preset=tiny", "--n_users=0"], 2, "n_users", world=False),
    Case("generate: shard out of range", "data.generate",
         ["--world_dir={case}/w", "--preset=tiny", "--shard=7"], 2, "--shard", world=False),
    Case("generate: stray argument", "data.generate", ["--world_dir={case}/w", "tiny"], 2,
         "unexpected arguments", world=False),
    # data.verify
    Case("verify: no --world_dir", "data.verify", [], 2, "--world_dir is required"),
    Case("verify: no world", "data.verify", ["--world_dir={case}/none"], 2, "no manifest",
         world=False),
    Case("verify: bit flip in items", "data.verify", ["--world_dir={world}"], 1,
         "items.parquet", _flip_bit("items.parquet")),
    Case("verify: schema edited", "data.verify", ["--world_dir={world}"], 1, "dwell_seconds",
         _edit_manifest(_relabel_dwell_as_serving)),
    Case("verify: NaN price, hashes redone", "data.verify", ["--world_dir={world}"], 1,
         "item_price", NAN_PRICE),
    Case("verify: manifest not JSON", "data.verify", ["--world_dir={world}"], 2,
         "manifest.json", _write("world/manifest.json", "nope")),
    # stages: flags
    Case("fine: --batch_size=-1", FINE, STAGE + ["--batch_size=-1"], 2, "--batch_size"),
    Case("fine: --seed=-1", FINE, STAGE + ["--seed=-1"], 2, "--seed"),
    Case("fine: --distill_lambda=1.5", FINE,
         STAGE + ["--task=cvr", "--variant=pfd", "--distill_lambda=1.5"], 2, "--distill_lambda"),
    Case("fine: --variant=pfd for ctr", FINE, STAGE + ["--variant=pfd"], 2, "--variant"),
    Case("fine: --task=ranking", FINE, STAGE + ["--task=ranking"], 1, "task"),
    Case("fine: --eval_day=99", FINE, STAGE + ["--eval_day=99"], 2, "--eval_day"),
    Case("fine: --train_days=1-x", FINE, STAGE + ["--train_days=1-x"], 2, "--train_days"),
    Case("fine: --hidden_units=8,x", FINE, STAGE + ["--hidden_units=8,x"], 2, "--hidden_units"),
    Case("fine: stray argument", FINE, STAGE + ["ctr"], 2, "unexpected arguments"),
    Case("coarse: --unlabelled_per_request=0", COARSE,
         STAGE + ["--variant=pfd", "--unlabelled_per_request=0"], 2, "--unlabelled_per_request"),
    Case("coarse: --distill_unlabelled without teacher", COARSE,
         STAGE + ["--distill_unlabelled"], 2, "--distill_unlabelled"),
    Case("retrieval: --temperature=0", RETRIEVAL, STAGE + ["--temperature=0"], 2,
         "--temperature"),
    Case("retrieval: --variant=pfd", RETRIEVAL, STAGE + ["--variant=pfd"], 2, "--variant"),
    # stages: the world and the model dir
    Case("fine: no world", FINE, ["--world_dir={case}/none", "--model_dir={models}"], 2,
         "no world at", world=False),
    Case("fine: world_dir is a file", FINE, ["--world_dir={case}/file", "--model_dir={models}"],
         2, "is a file", _write("file", "x"), world=False),
    Case("fine: schema relabels dwell as serving", FINE, STAGE + ["--task=cvr"], 2,
         "dwell_seconds", _edit_manifest(_relabel_dwell_as_serving)),
    Case("fine: a same-size bit flip in items", FINE, STAGE, 2, "items.parquet",
         _flip_bit("items.parquet")),
    Case("fine: NaN price, hashes redone", FINE, STAGE, 2, "item_price", NAN_PRICE),
    Case("fine: negative dwell, hashes redone", FINE, STAGE + ["--task=cvr"], 2,
         "dwell_seconds", _set_column(None, "dwell_seconds", _negate_last)),
    Case("fine: float column made string, hashes redone", FINE, STAGE, 2, "item_price",
         _set_column(None, "item_price", lambda v: v.astype(str))),
    Case("fine: manifest days edited", FINE, STAGE, 2, "'days'",
         _edit_manifest(lambda m: m.update(days=m["days"][:-1]))),
    Case("fine: manifest not JSON", FINE, STAGE, 2, "manifest.json",
         _write("world/manifest.json", "[1, 2")),
    Case("fine: model_dir is a file", FINE, STAGE, 2, "--model_dir",
         _write("models", "x")),
    Case("fine: model_dir of another world", FINE, STAGE, 2, "another world",
         _write("models/world.json", '{"world_hash": "0"}')),
    Case("fine: world.json not JSON", FINE, STAGE, 2, "world.json",
         _write("models/world.json", "{")),
    Case("coarse: pfd_md without a fine CTR model", COARSE, STAGE + ["--variant=pfd_md"], 2,
         "stages.fine", _pin_models_to_world, leaves=("models/coarse/pfd_md/checkpoints.json",)),
    Case("coarse: pfd_md teacher export is garbage", COARSE, STAGE + ["--variant=pfd_md"], 2,
         "not a readable SavedModel", _garbage_export("fine/ctr", "baseline"),
         leaves=("models/coarse/pfd_md/checkpoints.json",)),
    # experiments.replay
    Case("replay: no --run_dir", REPLAY, ["--world_dir={world}", "--model_dir={models}"], 2,
         "--run_dir"),
    Case("replay: --cvr_variant=nonsense", REPLAY, REPLAY_ARGS + ["--cvr_variant=nonsense"], 1,
         "pfd_md"),
    Case("replay: no models", REPLAY, REPLAY_ARGS, 2, "train it first"),
    Case("replay: world_dir is a file", REPLAY,
         ["--world_dir={case}/file", "--model_dir={models}", "--run_dir={run}"], 2, "is a file",
         _write("file", "x"), world=False),
    Case("replay: garbage retrieval export", REPLAY, REPLAY_ARGS, 2,
         "not a readable SavedModel", _garbage_export("retrieval", "baseline")),
    Case("replay: bad --funnel", REPLAY, REPLAY_ARGS + ["--funnel=retrieval:x"], 2, "funnel"),
    Case("replay: schema edited", REPLAY, REPLAY_ARGS, 2, "dwell_seconds",
         _edit_manifest(_relabel_dwell_as_serving)),
    # experiments.compare
    Case("compare: --report_dir is a file", "experiments.compare",
         ["--run_dirs={run}", "--report_dir={case}/file"], 2, "--report_dir",
         _write("file", "x"), world=False),
    Case("compare: run dir missing", "experiments.compare",
         ["--run_dirs={case}/none", "--report_dir={report}"], 2, "no such directory",
         world=False),
    Case("compare: summary.json not JSON", "experiments.compare",
         ["--run_dirs={run}", "--report_dir={report}"], 2, "summary.json", _finished_run,
         world=False),
    Case("compare: a glob that matches nothing", "experiments.compare",
         ["--run_dirs={case}/runs-*", "--report_dir={report}"], 2, "matches no directory",
         world=False),
    # experiments.audit and experiments.paper
    Case("audit: no model dir", "experiments.audit", ["--model_dir={models}"], 2,
         "--model_dir", world=False),
    Case("audit: no exports", "experiments.audit",
         ["--model_dir={models}", "--world_dir={world}"], 2, "no serving export",
         _pin_models_to_world),
    Case("audit: schema edited", "experiments.audit",
         ["--model_dir={models}", "--world_dir={world}"], 2, "dwell_seconds",
         lambda case: (_pin_models_to_world(case),
                       _edit_manifest(_relabel_dwell_as_serving)(case))),
    Case("paper: no --report_dir", "experiments.paper", ["--preset=tiny"], 2, "--report_dir",
         world=False),
    Case("paper: unknown study", "experiments.paper",
         ["--report_dir={report}", "--studies=nonsense"], 2, "--studies", world=False),
    Case("paper: a lambda that is not a number", "experiments.paper",
         ["--report_dir={report}", "--lambdas=0.1,x"], 2, "--lambdas", world=False),
    Case("paper: unknown preset", "experiments.paper",
         ["--report_dir={report}", "--preset=huge"], 1, "preset", world=False),
]


# ----------------------------------------------------------------------------- the harness


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


def prepare(case: Case, tiny_world_dir: str, case_dir: str) -> List[str]:
  os.makedirs(case_dir)
  if case.world:
    shutil.copytree(tiny_world_dir, os.path.join(case_dir, "world"))
  if case.mutate:
    case.mutate(case_dir)
  places = dict(case=case_dir, world=os.path.join(case_dir, "world"),
                models=os.path.join(case_dir, "models"), run=os.path.join(case_dir, "run"),
                report=os.path.join(case_dir, "report"))
  return [arg.format(**places) for arg in case.args]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(case, tiny_world_dir, tmp_path):
  case_dir = str(tmp_path / "case")
  argv = prepare(case, tiny_world_dir, case_dir)
  before = snapshot(case_dir)
  code, stdout, stderr = run_in_process(case.command, argv)
  output = stdout + stderr  # data.verify lists problems on stdout
  assert code == case.code, output
  assert case.message in output, output
  assert "Traceback" not in output, output
  after = snapshot(case_dir)
  for name in case.leaves:
    after.pop(name, None)
  assert after == before  # nothing written, nothing half-written


def test_the_table_covers_every_command_with_at_least_40_cases():
  commands = {case.command for case in CASES}
  assert len(CASES) >= 40
  assert commands >= {"data.generate", "data.verify", FINE, COARSE, RETRIEVAL, REPLAY,
                      "experiments.compare", "experiments.audit", "experiments.paper"}


def test_a_second_run_into_a_locked_stage_dir_is_refused(tiny_world_dir, tmp_path):
  models = str(tmp_path / "models")
  out_dir = layout.stage_dir(models, "fine/ctr", "baseline")
  with layout.stage_lock(out_dir):
    code, _, stderr = run_in_process(FINE, [f"--world_dir={tiny_world_dir}",
                                            f"--model_dir={models}"])
  assert code == 2 and "is in use by another run" in stderr, stderr
  assert f"pid {os.getpid()}" in stderr
  assert not os.path.exists(os.path.join(out_dir, "metrics.json"))


def test_the_json_a_command_writes_is_strict(tmp_path):
  """Finding 11: a NaN metric is written as null, never as a bare NaN."""
  path = str(tmp_path / "metrics.json")
  files.write_json(path, {"auc": float("nan"), "nested": [np.float32("inf"), 1.0]})
  text = open(path).read()
  assert "NaN" not in text and "Infinity" not in text
  assert json.loads(text) == {"auc": None, "nested": [None, 1.0]}
