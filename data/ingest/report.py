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
from typing import Any, Dict, Iterator, List, Optional, Sequence, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from data.plumbing import progress
from data.plumbing.command import UserError

CHUNK_ROWS = 1 << 20
# A chunk of long lines (Ali-CCP's common features: ~500 entries a line) is cut to about this
# many bytes of text, whatever --chunk_rows says: the parser's memory follows the bytes.
CHUNK_BYTES = 128 << 20


class IngestError(UserError):
  """Bad input: names the file, the line and what was expected."""

  def __init__(self, path: str, line: Optional[int], expected: str):
    where = f"{path}:{line}" if line is not None else path
    super().__init__(f"{where}: {expected}")
    self.path, self.line = path, line


class OutOfMemory(UserError):
  """The parser ran out of memory: the chunk, not the file, is at fault."""


class RowReport:
  """Counts of rows read, kept and dropped (by reason) per input file, with progress; and of
  kept rows a value of which was changed (by reason: `adjusted`)."""

  def __init__(self) -> None:
    self.read: Dict[str, int] = collections.Counter()
    self.kept: Dict[str, int] = collections.Counter()
    self.dropped: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
    self.adjusted: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
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

  def adjust(self, name: str, reason: str, n: int) -> None:
    """Kept rows one of whose values was changed, e.g. a conversion without a click."""
    if n:
      self.adjusted[name][reason] += int(n)

  def to_json(self) -> Dict[str, Dict[str, Any]]:
    return {name: {"read": int(self.read[name]), "kept": int(self.kept[name]),
                   "dropped": dict(self.dropped[name]),
                   "adjusted": dict(self.adjusted[name])} for name in sorted(self.read)}

  def format(self) -> str:
    lines = []
    for name, entry in self.to_json().items():
      dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(entry["dropped"].items()))
      adjusted = ", ".join(f"{n} {reason}" for reason, n in sorted(entry["adjusted"].items()))
      lines.append(f"{name}: read {entry['read']}, kept {entry['kept']}"
                   + (f", dropped {dropped}" if dropped else "")
                   + (f"; of the kept, {adjusted}" if adjusted else ""))
    return "\n".join(lines)


def require_file(directory: str, name: str, what: str) -> str:
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    raise IngestError(path, None, f"missing file: expected {what}")
  return path


def read_csv_chunks(path: str, columns: Sequence[str], separator: str = ",", header: bool = True,
                    dtype: Any = None, chunk_rows: int = CHUNK_ROWS,
                    encoding: str = "utf-8") -> Iterator[pd.DataFrame]:
  """Chunks of a delimited file as DataFrames with `columns`, plus a `_line` column.

  With header=True the file's header must name every column of `columns` (extra columns
  are ignored); a file of another format fails here with its header in the message. A chunk
  holds at most `chunk_rows` rows and about CHUNK_BYTES of text. A byte that is not UTF-8 is
  named by its line; running out of memory is said to be that, not a format error.
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
  rows = bounded_chunk_rows(path, chunk_rows)
  try:
    reader = pd.read_csv(path, sep=separator, header=None, names=names, skiprows=skip,
                         dtype=dtype, chunksize=rows, encoding=encoding,
                         keep_default_na=False, na_values=[""], engine="c",
                         quoting=3 if separator != "," else 0)
    for chunk in reader:
      chunk = chunk[list(columns)].copy()
      chunk["_line"] = np.arange(offset, offset + len(chunk), dtype=np.int64)
      offset += len(chunk)
      yield chunk
  except UnicodeDecodeError as e:
    raise not_utf8(path, e) from None
  except MemoryError:
    raise out_of_memory(path, rows) from None
  except (ValueError, pd.errors.ParserError) as e:
    if "out of memory" in str(e).lower():
      raise out_of_memory(path, rows) from None
    raise IngestError(path, None, f"not a {separator!r}-separated file of {list(columns)}: {e}")


def bounded_chunk_rows(path: str, chunk_rows: int) -> int:
  """`chunk_rows`, lowered so that a chunk of the file's lines holds about CHUNK_BYTES (the
  line length is estimated from the first MiB)."""
  with open(path, "rb") as f:
    sample = f.read(1 << 20)
  lines = max(sample.count(b"\n"), 1)
  per_line = max(len(sample) / lines, 1.0)
  return max(1, min(int(chunk_rows), int(CHUNK_BYTES / per_line)))


def out_of_memory(path: str, rows: int) -> OutOfMemory:
  return OutOfMemory(f"{path}: out of memory while parsing a chunk of up to {rows} rows "
                     "(the file's format is not at fault); lower --chunk_rows, or free memory")


def not_utf8(path: str, error: UnicodeDecodeError) -> IngestError:
  """The error for a byte that is not UTF-8, naming its line (found by reading the file)."""
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      try:
        raw.decode("utf-8")
      except UnicodeDecodeError as bad:
        byte = raw[bad.start:bad.start + 1].hex()
        return IngestError(path, number, f"byte 0x{byte} at column {bad.start + 1} is not "
                           "UTF-8: expected UTF-8 text (re-encode the file, e.g. "
                           "`iconv -f latin1 -t utf-8`)")
  return IngestError(path, None, f"not UTF-8 text: {error}")


def check_labels(path: str, lines: np.ndarray, values: np.ndarray, name: str) -> np.ndarray:
  """int64 labels; raises naming the first line whose label is not 0 or 1."""
  numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
  bad = ~np.isin(numeric, (0.0, 1.0))
  if bad.any():
    i = int(np.argmax(bad))
    raise IngestError(path, int(lines[i]), f"{name} must be 0 or 1, got {values[i]!r}")
  return cast(np.ndarray, numeric.astype(np.int64))


def check_integers(path: str, lines: np.ndarray, values: npt.ArrayLike, name: str) -> np.ndarray:
  """int64 values; raises naming the first line that is not an integer."""
  numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
  bad = ~np.isfinite(numeric) | (numeric != np.round(numeric))
  if bad.any():
    i = int(np.argmax(bad))
    raise IngestError(path, int(lines[i]), f"{name} must be an integer, got "
                      f"{np.asarray(values)[i]!r}")
  return cast(np.ndarray, numeric.astype(np.int64))


def check_monotone_in_request(paths: Sequence[str], files: np.ndarray, lines: np.ndarray,
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

  def __init__(self) -> None:
    self._index = pd.Index([])
    self._parts: List[Any] = []

  def encode(self, values: Any) -> np.ndarray:  # keys: a Series, an array or a list
    """Codes of values; a value seen for the first time gets the next code."""
    values = pd.Index(pd.Series(values).astype(str))
    codes = self._index.get_indexer(values).astype(np.int64)
    new = codes < 0
    if new.any():
      inverse, uniques = pd.factorize(values[new])  # in order of first appearance
      codes[new] = len(self._index) + inverse
      self._index = self._index.append(uniques)
    return cast(np.ndarray, codes)

  def lookup(self, values: npt.ArrayLike) -> np.ndarray:
    """Codes of values, -1 for unknown ones."""
    return cast(np.ndarray,
                self._index.get_indexer(pd.Index(pd.Series(values).astype(str))).astype(np.int64))

  def __len__(self) -> int:
    return len(self._index)


def read_json_file(path: str) -> Any:
  """A user-written JSON file (a contract, a field mapping); IngestError names a bad one."""
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise IngestError(path, getattr(e, "lineno", None), f"expected JSON: {e}")
