"""Atomic file writes: every output of the project goes through here.

A reader (another process, a resumed run, a user's script) must never see a half-written file,
so each writer produces a temporary sibling and renames it into place: the rename is atomic on
POSIX file systems. Temporary names start with a dot, so directory listings and globs skip
them, and they are removed when the write fails. Files get the permissions the umask gives
(not mkstemp's owner-only 0600), so results can be shared.

JSON is strict: NaN and infinities become null (`json_safe`), numpy scalars and arrays become
plain numbers and lists.
"""

import contextlib
import json
import math
import os
import shutil
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


class UnreadableFileError(ValueError):
  """A file the project wrote (or a user edited) cannot be read back; names the file."""


def _temporary_sibling(path: str) -> str:
  directory, name = os.path.split(os.path.abspath(path))
  return os.path.join(directory, f".{name}.tmp-{os.getpid()}")


def write_with(path: str, write: Callable[[str], None]) -> str:
  """Calls `write(temporary_path)`, then renames the result to `path`; returns `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = _temporary_sibling(path)
  try:
    write(tmp)
    os.replace(tmp, path)
  except OSError as error:
    if error.filename:
      raise
    # pyarrow's and numpy's write errors name no file: name the one being written.
    raise OSError(error.errno, error.strerror or str(error), path) from error
  finally:
    if os.path.lexists(tmp):
      os.remove(tmp)
  return path


def json_safe(value: Any) -> Any:
  """`value` with numpy types made plain and non-finite floats made None (strict JSON)."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, np.ndarray):
    return json_safe(value.tolist())
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  return value


def write_json(path: str, payload: Any, indent: int = 2) -> str:
  """Writes `payload` as strict, key-sorted JSON (a trailing newline) atomically."""
  text = json.dumps(json_safe(payload), indent=indent, sort_keys=True, allow_nan=False) + "\n"
  return write_text(path, text)


def read_json(path: str) -> Any:
  """Reads a JSON file; a file that is not JSON raises UnreadableFileError naming it."""
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as error:
    raise UnreadableFileError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}); "
                              "it may be damaged or hand-edited") from None


def with_generated_block(document: str, begin: str, end: str, block: str, path: str) -> str:
  """`document` with its text from the `begin` marker through the `end` marker replaced by
  `block` (which carries the markers again): a generated part of a hand-written page."""
  if begin not in document or end not in document:
    raise ValueError(f"{path} lacks the markers {begin!r} and {end!r}")
  head, rest = document.split(begin, 1)
  return head + block + rest.split(end, 1)[1]


def write_text(path: str, text: str) -> str:
  def write(tmp: str) -> None:
    with open(tmp, "w") as f:
      f.write(text)
  return write_with(path, write)


def write_npy(path: str, array: np.ndarray) -> str:
  def write(tmp: str) -> None:
    with open(tmp, "wb") as f:
      np.save(f, array)
  return write_with(path, write)


def write_parquet(path: str, table: pa.Table, **options: Any) -> str:
  """Writes a pyarrow table as Parquet; `options` go to `pyarrow.parquet.write_table`."""
  return write_with(path, lambda tmp: pq.write_table(table, tmp, **options))


def write_png(path: str, figure: Any, dpi: int = 110) -> str:
  """Saves a matplotlib figure as PNG and closes it."""
  import matplotlib.pyplot as plt  # Only the report writers need matplotlib.
  figure.tight_layout()
  try:
    return write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))
  finally:
    plt.close(figure)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
  """Yields a temporary sibling directory to fill; on success it replaces `path` whole.

  On error the temporary directory is removed and `path` is left as it was.
  """
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = _temporary_sibling(path)
  remove_tree(tmp)
  os.makedirs(tmp)
  try:
    yield tmp
    replace_directory(tmp, path)
  finally:
    remove_tree(tmp)


def replace_directory(source: str, path: str) -> None:
  """Moves directory `source` to `path`, replacing what is there (renames, no copy)."""
  old: Optional[str] = None
  if os.path.lexists(path):
    old = _temporary_sibling(path) + ".old"
    remove_tree(old)
    os.rename(path, old)
  os.rename(source, path)
  if old:
    remove_tree(old)


def remove_tree(path: str) -> None:
  """Removes a file, link or directory tree if it exists."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.lexists(path):
    os.remove(path)

