"""Ali-CCP's feature lists, parsed a chunk at a time with numpy instead of a Python loop per row.

A feature list is entries `field\\x02id\\x03value` joined by `\\x01` (docs/real_logs.md). The
chunk's lists are checked against that grammar with one regular expression (pandas' string
ops; RE2 under pyarrow), then taken apart on their raw UTF-8 bytes, BATCH_ROWS rows at a
time: the positions of the three control characters give every entry's field, id and value,
so a field's first id per row or the sum of its values per row costs a few vectorised passes
over the batch. Only those results are kept, so the work arrays stay small whatever the chunk.

Sums are float64 in entry order, then float32: the same numbers as Python's left-to-right
`sum(map(float, values))` on the same strings (arrow parses each value with a correctly
rounded string-to-double conversion, as `float` does).
"""

import re
from typing import Dict, Iterable, List, Tuple

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data.ingest import report as R

_ENTRY = r"[0-9_]+\x02[0-9]+\x03[-+0-9.eE]+"
WELL_FORMED = re.compile(rf"^{_ENTRY}(?:\x01{_ENTRY})*$")
ENTRY_SEPARATOR, ID_MARK, VALUE_MARK = 1, 2, 3
_STRINGS = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' `str`, kept in arrow
BATCH_ROWS = 1 << 15


def _arrow_chunks(lists: pd.Series) -> List[pa.LargeStringArray]:
  """The strings as arrow arrays (pandas' own buffers when it holds them in arrow already)."""
  array = pa.array(lists.array if hasattr(lists, "array") else lists)
  chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
  return [chunk.cast(pa.large_string()) for chunk in chunks]


class _Batch:
  """Rows [begin, begin + len(strings)) of a chunk, taken apart: every entry's row, and the
  byte ranges of its field, id and value in `strings`' data buffer."""

  def __init__(self, strings: pa.LargeStringArray, begin: int):
    self.buffer = strings.buffers()[2] or pa.py_buffer(b"")
    self.data = np.frombuffer(self.buffer, np.uint8)
    offsets = np.frombuffer(strings.buffers()[1], np.int64)[strings.offset:
                                                            strings.offset + len(strings) + 1]
    base = int(offsets[0])
    text = self.data[base:int(offsets[-1])]
    self.id_mark = np.flatnonzero(text == ID_MARK) + base  # one per entry, in order
    self.value_mark = np.flatnonzero(text == VALUE_MARK) + base
    separator = np.flatnonzero(text == ENTRY_SEPARATOR) + base
    self.counts = np.diff(np.searchsorted(self.id_mark, offsets))
    self.row = np.repeat(np.arange(begin, begin + len(strings), dtype=np.int64), self.counts)
    first = np.ones(len(self.id_mark), bool)  # the first entry of its row
    first[1:] = self.row[1:] != self.row[:-1]
    last = np.ones(len(self.id_mark), bool)
    last[:-1] = first[1:]
    self.start = np.empty(len(self.id_mark), np.int64)
    self.start[first] = offsets[:-1][self.counts > 0]
    self.start[~first] = separator + 1
    self.value_end = np.empty(len(self.id_mark), np.int64)
    self.value_end[last] = offsets[1:][self.counts > 0]
    self.value_end[~last] = separator

  def entries(self, fields: List[str]) -> Dict[str, np.ndarray]:
    """Indices of the entries of each field (at most 8 characters), in order."""
    length = self.id_mark - self.start
    out = {}
    for size in sorted({len(f) for f in fields}):
      candidates = np.flatnonzero(length == size)
      text = np.zeros((len(candidates), 8), np.uint8)  # the field name, zero-padded to 8
      text[:, :size] = self.data[self.start[candidates, None] + np.arange(size)]
      key = text.view(np.uint64).reshape(-1)
      for field in (f for f in fields if len(f) == size):
        packed = np.frombuffer(field.encode().ljust(8, b"\0"), np.uint64)[0]
        out[field] = candidates[key == packed]
    return out

  def substrings(self, start: np.ndarray, stop: np.ndarray) -> pa.LargeStringArray:
    """The text [start, stop) of each range, as an arrow array over the batch's own bytes.

    The ranges are in order and disjoint, so [start_0, stop_0, start_1, stop_1, ...] are valid
    arrow offsets of an array alternating wanted pieces and the gaps between them; taking
    every other element keeps the pieces, in one copy of just their bytes.
    """
    offsets = np.empty(2 * len(start), np.int64)
    offsets[0::2], offsets[1::2] = start, stop
    if not len(offsets):
      return pa.array([], pa.large_string())
    pieces = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets),
                                              self.buffer)
    return pieces.take(pa.array(np.arange(0, len(offsets) - 1, 2)))


class FeatureLists:
  """The feature lists of one chunk, checked; the first id of each of `id_fields` and the sum
  of the values of each of `sum_fields`, per row."""

  def __init__(self, path: str, lines: np.ndarray, lists: pd.Series, declared: npt.ArrayLike,
               id_fields: Iterable[str], sum_fields: Iterable[str] = (),
               batch_rows: int = BATCH_ROWS) -> None:
    """Raises IngestError at the first malformed list or value, or where `declared` (the
    feature_num column) disagrees with the number of entries."""
    if lists.isna().any():
      lists = lists.fillna("")
    good = lists.str.match(WELL_FORMED).to_numpy(bool)
    if not good.all():
      i = int(np.argmax(~good))
      raise R.IngestError(path, int(lines[i]), "malformed feature list: expected entries "
                          f"field\\x02id\\x03value separated by \\x01, got {lists.iloc[i][:60]!r}")
    self.path, self.lines, self.n = path, lines, len(lists)
    declared = R.check_integers(path, lines, declared, "feature_num")
    id_fields, sum_fields = list(id_fields), list(sum_fields)
    ids: Dict[str, List[Tuple[np.ndarray, pa.Array]]] = {f: [] for f in id_fields}
    self._sums = {f: np.zeros(self.n, np.float32) for f in sum_fields}
    begin = 0
    for strings in _arrow_chunks(lists):
      for offset in range(0, len(strings), batch_rows):
        batch = _Batch(strings.slice(offset, batch_rows), begin + offset)
        self._check_count(batch, declared, begin + offset)
        entries = batch.entries(id_fields + sum_fields)
        for field in id_fields:
          ids[field].append(self._first_ids(batch, entries[field]))
        for field in sum_fields:
          self._add_sums(batch, entries[field], field)
      begin += len(strings)
    self._ids = {f: (np.concatenate([rows for rows, _ in parts]) if parts else
                     np.zeros(0, np.int64),
                     pa.concat_arrays([text for _, text in parts]) if parts else
                     pa.array([], pa.large_string()))
                 for f, parts in ids.items()}

  def _check_count(self, batch: _Batch, declared: np.ndarray, begin: int) -> None:
    wrong = batch.counts != declared[begin:begin + len(batch.counts)]
    if wrong.any():
      i = begin + int(np.argmax(wrong))
      raise R.IngestError(self.path, int(self.lines[i]), f"feature_num says {declared[i]} "
                          f"features, the feature list has {batch.counts[i - begin]}")

  @staticmethod
  def _first_ids(batch: _Batch, entries: np.ndarray) -> Tuple[np.ndarray, pa.Array]:
    rows = batch.row[entries]
    first = np.ones(len(rows), bool)
    first[1:] = rows[1:] != rows[:-1]
    entries = entries[first]
    return rows[first], batch.substrings(batch.id_mark[entries] + 1, batch.value_mark[entries])

  def _add_sums(self, batch: _Batch, entries: np.ndarray, field: str) -> None:
    text = batch.substrings(batch.value_mark[entries] + 1, batch.value_end[entries])
    try:
      values = pc.cast(text, pa.float64()).to_numpy()
    except pa.ArrowInvalid:
      strings = text.to_pylist()
      i = next(k for k, v in enumerate(strings) if _not_a_number(v))
      raise R.IngestError(self.path, int(self.lines[batch.row[entries[i]]]),
                          f"field {field}: expected a number as the value, got "
                          f"{strings[i]!r}") from None
    rows = batch.row[entries]
    if len(rows):
      low = int(batch.row[0])  # rows of one batch: every entry of a row is in the batch
      sums = np.bincount(rows - low, weights=values)
      self._sums[field][low:low + len(sums)] = sums.astype(np.float32)

  def first_ids(self, field: str) -> Tuple[np.ndarray, pd.Series]:
    """(rows, ids): the rows holding `field` and its first id in each (strings)."""
    rows, text = self._ids[field]
    return rows, pd.Series(pd.array(text, dtype=_STRINGS))

  def sums(self, field: str) -> np.ndarray:
    """The sum of `field`'s values in each row, float32 (0 where absent)."""
    return self._sums[field]


def _not_a_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return True
  return False
