"""What every adapter shares: the error for bad input, the row report, chunked reading.

An input error names the file, the line (1-based, counting the header) and what was
expected, and aborts the ingest before anything is written. A row that is read but not kept
is never lost silently: it is counted under its reason in the report, which the manifest
records and the command prints.
"""

import collections
import json
import os
import time
from typing import Dict, Iterator, Optional

import numpy as np
import pandas as pd

from data import progress
from data.command import UserError

CHUNK_ROWS = 1 << 20


class IngestError(UserError):
  """Bad input: names the file, the line and what was expected."""

  def __init__(self, path: str, line: Optional[int], expected: str):
    where = f"{path}:{line}" if line is not None else path
    super().__init__(f"{where}: {expected}")
    self.path, self.line = path, line


class RowReport:
  """Counts of rows read, kept and dropped (by reason) per input file, with progress."""

  def __init__(self):
    self.read: Dict[str, int] = collections.Counter()
    self.kept: Dict[str, int] = collections.Counter()
    self.dropped: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
    self._start = time.time()
    self._line = progress.Line("ingest")

  def add_read(self, name: str, n: int) -> None:
    self.read[name] += int(n)
    self._line.update("%s: %d rows read (%.0fs)", name, self.read[name],
                      time.time() - self._start)

  def drop(self, name: str, reason: str, n: int) -> None:
    if n:
      self.dropped[name][reason] += int(n)

  def keep(self, name: str, n: int) -> None:
    self.kept[name] += int(n)

  def drop_kept(self, name: str, reason: str, n: int) -> None:
    """Rows counted as kept that a later step drops (e.g. duplicates found day by day)."""
    self.drop(name, reason, n)
    self.kept[name] -= int(n)

  def to_json(self) -> dict:
    return {name: {"read": int(self.read[name]), "kept": int(self.kept[name]),
                   "dropped": dict(self.dropped[name])} for name in sorted(self.read)}

  def format(self) -> str:
    lines = []
    for name, entry in self.to_json().items():
      dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(entry["dropped"].items()))
      lines.append(f"{name}: read {entry['read']}, kept {entry['kept']}"
                   + (f", dropped {dropped}" if dropped else ""))
    return "\n".join(lines)


def require_file(directory: str, name: str, what: str) -> str:
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    raise IngestError(path, None, f"missing file: expected {what}")
  return path


def read_csv_chunks(path: str, columns, separator: str = ",", header: bool = True,
                    dtype=None, chunk_rows: int = CHUNK_ROWS,
                    encoding: str = "utf-8") -> Iterator[pd.DataFrame]:
  """Chunks of a delimited file as DataFrames with `columns`, plus a `_line` column.

  With header=True the file's header must name every column of `columns` (extra columns
  are ignored); a file of another format fails here with its header in the message.
  """
  names = None
  skip = 0
  if header:
    with open(path, encoding=encoding, errors="replace") as f:
      first = f.readline().rstrip("\r\n")
    found = [c.strip() for c in first.split(separator)]
    missing = [c for c in columns if c not in found]
    if missing:
      raise IngestError(path, 1, f"expected a header with columns {list(columns)} separated "
                        f"by {separator!r}; missing {missing}, found {found[:12]}")
    names, skip = found, 1
  else:
    names = list(columns)
  offset = skip + 1
  try:
    reader = pd.read_csv(path, sep=separator, header=None, names=names, skiprows=skip,
                         dtype=dtype, chunksize=chunk_rows, encoding=encoding,
                         keep_default_na=False, na_values=[""], engine="c",
                         quoting=3 if separator != "," else 0)
    for chunk in reader:
      chunk = chunk[list(columns)].copy()
      chunk["_line"] = np.arange(offset, offset + len(chunk), dtype=np.int64)
      offset += len(chunk)
      yield chunk
  except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
    raise IngestError(path, None, f"not a {separator!r}-separated file of {list(columns)}: {e}")


def check_labels(path: str, lines: np.ndarray, values: np.ndarray, name: str) -> np.ndarray:
  """int64 labels; raises naming the first line whose label is not 0 or 1."""
  numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
  bad = ~np.isin(numeric, (0.0, 1.0))
  if bad.any():
    i = int(np.argmax(bad))
    raise IngestError(path, int(lines[i]), f"{name} must be 0 or 1, got {values[i]!r}")
  return numeric.astype(np.int64)


def check_integers(path: str, lines: np.ndarray, values, name: str) -> np.ndarray:
  """int64 values; raises naming the first line that is not an integer."""
  numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
  bad = ~np.isfinite(numeric) | (numeric != np.round(numeric))
  if bad.any():
    i = int(np.argmax(bad))
    raise IngestError(path, int(lines[i]), f"{name} must be an integer, got "
                      f"{np.asarray(values)[i]!r}")
  return numeric.astype(np.int64)


def check_monotone_in_request(paths, files: np.ndarray, lines: np.ndarray,
                              requests: np.ndarray, timestamps: np.ndarray) -> None:
  """Raises at the first row, in input order, whose timestamp is earlier than that of the
  previous row of its request. Rows come from `paths[files]` at `lines`."""
  order = np.lexsort((lines, files, requests))
  same = requests[order][1:] == requests[order][:-1]
  back = np.flatnonzero(same & (timestamps[order][1:] < timestamps[order][:-1]))
  if len(back):
    first = back[np.lexsort((lines[order][back + 1], files[order][back + 1]))[0]]
    row, previous = order[first + 1], order[first]
    where = ("" if files[previous] == files[row] else f" of {paths[files[previous]]}")
    raise IngestError(paths[files[row]], int(lines[row]),
                      f"timestamp {int(timestamps[row])} goes backwards inside its request: "
                      f"expected at least {int(timestamps[previous])}, the timestamp of the "
                      f"request's previous row (line {int(lines[previous])}{where})")


class Codes:
  """Dense int64 codes for raw keys (any hashable value), assigned in order of appearance."""

  def __init__(self):
    self._index = pd.Index([])
    self._parts = []

  def encode(self, values) -> np.ndarray:
    """Codes of values; a value seen for the first time gets the next code."""
    values = pd.Index(pd.Series(values).astype(str))
    codes = self._index.get_indexer(values).astype(np.int64)
    new = codes < 0
    if new.any():
      inverse, uniques = pd.factorize(values[new])  # in order of first appearance
      codes[new] = len(self._index) + inverse
      self._index = self._index.append(uniques)
    return codes

  def lookup(self, values) -> np.ndarray:
    """Codes of values, -1 for unknown ones."""
    return self._index.get_indexer(pd.Index(pd.Series(values).astype(str))).astype(np.int64)

  def __len__(self) -> int:
    return len(self._index)


def read_json_file(path: str):
  """A user-written JSON file (a contract, a field mapping); IngestError names a bad one."""
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise IngestError(path, getattr(e, "lineno", None), f"expected JSON: {e}")
