"""Ali-CCP's feature lists, parsed a chunk at a time with numpy instead of a Python loop per row.

A feature list is entries `field\\x02id\\x03value` joined by `\\x01` (docs/real_logs.md). The
chunk's lists are checked against that grammar with one regular expression (pandas' string
ops; RE2 under pyarrow), then taken apart on their raw UTF-8 bytes: the positions of the three
control characters give every entry's field, id and value, so a field's first id per row or the
sum of its values per row costs a few vectorised passes over the chunk, whatever its length.

Sums are float64 in entry order, then float32: the same numbers as Python's left-to-right
`sum(map(float, values))` on the same strings (arrow parses each value with a correctly
rounded string-to-double conversion, as `float` does).
"""

import re
from typing import Dict, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data.ingest import report as R

_ENTRY = r"[0-9_]+\x02[0-9]+\x03[-+0-9.eE]+"
WELL_FORMED = re.compile(rf"^{_ENTRY}(?:\x01{_ENTRY})*$")
ENTRY_SEPARATOR, ID_MARK, VALUE_MARK = 1, 2, 3
_STRINGS = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' `str`, kept in arrow


def _utf8(lists: pd.Series) -> pa.LargeStringArray:
  """The strings as one arrow array (no copy when pandas holds them in arrow already)."""
  array = pa.array(lists.array if hasattr(lists, "array") else lists)
  if isinstance(array, pa.ChunkedArray):
    array = array.combine_chunks()
  return array.cast(pa.large_string())


class FeatureLists:
  """The feature lists of one chunk, checked, with the entries of `fields` located."""

  def __init__(self, path: str, lines: np.ndarray, lists: pd.Series, declared,
               fields: Iterable[str]):
    """Raises IngestError at the first malformed list, or where `declared` (the feature_num
    column) disagrees with the number of entries. `fields`: the fields that will be read."""
    lists = lists.fillna("")
    good = lists.str.match(WELL_FORMED).to_numpy(bool)
    if not good.all():
      i = int(np.argmax(~good))
      raise R.IngestError(path, int(lines[i]), "malformed feature list: expected entries "
                          f"field\\x02id\\x03value separated by \\x01, got {lists.iloc[i][:60]!r}")
    self.path, self.lines, self.n = path, lines, len(lists)
    array = _utf8(lists)
    offsets = np.frombuffer(array.buffers()[1], np.int64)[array.offset:
                                                          array.offset + len(array) + 1]
    self._buffer = array.buffers()[2] or pa.py_buffer(b"")
    data = np.frombuffer(self._buffer, np.uint8)
    self._data = data
    id_mark = np.flatnonzero(data == ID_MARK)  # one per entry, in order
    value_mark = np.flatnonzero(data == VALUE_MARK)
    separator = np.flatnonzero(data == ENTRY_SEPARATOR)
    counts = np.diff(np.searchsorted(id_mark, offsets))
    declared = R.check_integers(path, lines, declared, "feature_num")
    wrong = counts != declared
    if wrong.any():
      i = int(np.argmax(wrong))
      raise R.IngestError(path, int(lines[i]), f"feature_num says {declared[i]} "
                          f"features, the feature list has {counts[i]}")
    self.row = np.repeat(np.arange(self.n, dtype=np.int64), counts)
    first = np.ones(len(id_mark), bool)  # the first entry of its row
    first[1:] = self.row[1:] != self.row[:-1]
    last = np.ones(len(id_mark), bool)
    last[:-1] = first[1:]
    start = np.empty(len(id_mark), np.int64)
    start[first] = offsets[:-1][counts > 0]
    start[~first] = separator + 1
    self.value_end = np.empty(len(id_mark), np.int64)
    self.value_end[last] = offsets[1:][counts > 0]
    self.value_end[~last] = separator
    self.id_mark, self.value_mark = id_mark, value_mark
    self._entries = self._locate(start, id_mark - start, set(fields))

  def _locate(self, start, length, fields) -> Dict[str, np.ndarray]:
    """Indices of the entries of each field (at most 8 characters), in order."""
    out = {}
    for size in sorted({len(f) for f in fields}):
      candidates = np.flatnonzero(length == size)
      text = np.zeros((len(candidates), 8), np.uint8)  # the field name, zero-padded to 8
      text[:, :size] = self._data[start[candidates, None] + np.arange(size)]
      key = text.view(np.uint64).reshape(-1)
      for field in (f for f in fields if len(f) == size):
        packed = np.frombuffer(field.encode().ljust(8, b"\0"), np.uint64)[0]
        out[field] = candidates[key == packed]
    return out

  def _substrings(self, start: np.ndarray, stop: np.ndarray) -> pa.LargeStringArray:
    """The text [start, stop) of each entry, as an arrow array over the chunk's own bytes.

    The ranges are in order and disjoint, so [start_0, stop_0, start_1, stop_1, ...] are valid
    arrow offsets of an array alternating wanted pieces and the gaps between them; taking
    every other element keeps the pieces, in one copy of just their bytes.
    """
    offsets = np.empty(2 * len(start), np.int64)
    offsets[0::2], offsets[1::2] = start, stop
    if not len(offsets):
      return pa.array([], pa.large_string())
    pieces = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets),
                                              self._buffer)
    return pieces.take(pa.array(np.arange(0, len(offsets) - 1, 2)))

  def first_ids(self, field: str):
    """(rows, ids): the rows holding `field` and its first id in each (strings)."""
    entries = self._entries[field]
    rows = self.row[entries]
    first = np.ones(len(entries), bool)
    first[1:] = rows[1:] != rows[:-1]
    entries = entries[first]
    ids = self._substrings(self.id_mark[entries] + 1, self.value_mark[entries])
    return self.row[entries], pd.Series(pd.array(ids, dtype=_STRINGS))

  def sums(self, field: str) -> np.ndarray:
    """The sum of `field`'s values in each row, float32 (0 where absent)."""
    entries = self._entries[field]
    text = self._substrings(self.value_mark[entries] + 1, self.value_end[entries])
    try:
      values = pc.cast(text, pa.float64()).to_numpy()
    except pa.ArrowInvalid:
      strings = text.to_pylist()
      i = next(k for k, v in enumerate(strings) if _not_a_number(v))
      raise R.IngestError(self.path, int(self.lines[self.row[entries[i]]]),
                          f"field {field}: expected a number as the value, got "
                          f"{strings[i]!r}") from None
    return np.bincount(self.row[entries], weights=values, minlength=self.n).astype(np.float32)


def _not_a_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return True
  return False
