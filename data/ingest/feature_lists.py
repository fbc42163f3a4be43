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
from typing import Dict, Iterable, List

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data.ingest import report as R

_ENTRY = r"[0-9_]+\x02[0-9]+\x03[-+0-9.eE]+"
WELL_FORMED = re.compile(rf"^{_ENTRY}(?:\x01{_ENTRY})*$")
ENTRY_SEPARATOR, ID_MARK, VALUE_MARK = 1, 2, 3
_STRINGS = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' `str`, kept in arrow
_ENTRY_ARRAYS = ("row", "id_start", "id_stop", "value_start", "value_stop")
BATCH_ROWS = 1 << 15


def _utf8(lists: pd.Series) -> pa.LargeStringArray:
  """The strings as one arrow array (no copy when pandas holds them in arrow already)."""
  array = pa.array(lists.array if hasattr(lists, "array") else lists)
  if isinstance(array, pa.ChunkedArray):
    array = array.combine_chunks()
  return array.cast(pa.large_string())


class FeatureLists:
  """The feature lists of one chunk, checked, with the entries of the wanted fields located.

  The lists are taken apart BATCH_ROWS rows at a time, keeping only the wanted fields'
  entries, so the work arrays stay small whatever the chunk size.
  """

  def __init__(self, path: str, lines: np.ndarray, lists: pd.Series, declared,
               fields: Iterable[str], batch_rows: int = BATCH_ROWS):
    """Raises IngestError at the first malformed list, or where `declared` (the feature_num
    column) disagrees with the number of entries. `fields`: the fields that will be read."""
    lists = lists.fillna("")
    good = lists.str.match(WELL_FORMED).to_numpy(bool)
    if not good.all():
      i = int(np.argmax(~good))
      raise R.IngestError(path, int(lines[i]), "malformed feature list: expected entries "
                          f"field\\x02id\\x03value separated by \\x01, got {lists.iloc[i][:60]!r}")
    self.path, self.lines, self.n = path, lines, len(lists)
    declared = R.check_integers(path, lines, declared, "feature_num")
    array = _utf8(lists)
    self._buffer = array.buffers()[2] or pa.py_buffer(b"")
    self._data = np.frombuffer(self._buffer, np.uint8)
    fields = sorted(set(fields))
    parts: Dict[str, list] = {f: [] for f in fields}
    for begin in range(0, self.n, batch_rows):
      batch = array.slice(begin, batch_rows)
      for field, entries in self._locate(batch, begin, declared[begin:begin + batch_rows],
                                         fields).items():
        parts[field].append(entries)
    self._entries = {f: {k: np.concatenate([p[k] for p in parts[f]]) if parts[f]
                         else np.zeros(0, np.int64) for k in _ENTRY_ARRAYS} for f in fields}

  def _locate(self, batch: pa.LargeStringArray, begin: int, declared: np.ndarray,
              fields: List[str]) -> Dict[str, Dict[str, np.ndarray]]:
    """The wanted fields' entries among rows [begin, begin + len(batch)): their rows and the
    byte ranges of their ids and values in the chunk's buffer."""
    offsets = np.frombuffer(batch.buffers()[1], np.int64)[batch.offset:
                                                          batch.offset + len(batch) + 1]
    base = int(offsets[0])
    data = self._data[base:int(offsets[-1])]
    id_mark = np.flatnonzero(data == ID_MARK) + base  # one per entry, in order
    value_mark = np.flatnonzero(data == VALUE_MARK) + base
    separator = np.flatnonzero(data == ENTRY_SEPARATOR) + base
    counts = np.diff(np.searchsorted(id_mark, offsets))
    wrong = counts != declared
    if wrong.any():
      i = int(np.argmax(wrong))
      raise R.IngestError(self.path, int(self.lines[begin + i]), f"feature_num says "
                          f"{declared[i]} features, the feature list has {counts[i]}")
    row = np.repeat(np.arange(begin, begin + len(batch), dtype=np.int64), counts)
    first = np.ones(len(id_mark), bool)  # the first entry of its row
    first[1:] = row[1:] != row[:-1]
    last = np.ones(len(id_mark), bool)
    last[:-1] = first[1:]
    start = np.empty(len(id_mark), np.int64)
    start[first] = offsets[:-1][counts > 0]
    start[~first] = separator + 1
    value_end = np.empty(len(id_mark), np.int64)
    value_end[last] = offsets[1:][counts > 0]
    value_end[~last] = separator
    length = id_mark - start
    out = {}
    for size in sorted({len(f) for f in fields}):
      candidates = np.flatnonzero(length == size)
      text = np.zeros((len(candidates), 8), np.uint8)  # the field name, zero-padded to 8
      text[:, :size] = self._data[start[candidates, None] + np.arange(size)]
      key = text.view(np.uint64).reshape(-1)
      for field in (f for f in fields if len(f) == size):
        packed = np.frombuffer(field.encode().ljust(8, b"\0"), np.uint64)[0]
        entries = candidates[key == packed]
        out[field] = {"row": row[entries], "id_start": id_mark[entries] + 1,
                      "id_stop": value_mark[entries], "value_start": value_mark[entries] + 1,
                      "value_stop": value_end[entries]}
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
    rows = entries["row"]
    first = np.ones(len(rows), bool)
    first[1:] = rows[1:] != rows[:-1]
    ids = self._substrings(entries["id_start"][first], entries["id_stop"][first])
    return rows[first], pd.Series(pd.array(ids, dtype=_STRINGS))

  def sums(self, field: str) -> np.ndarray:
    """The sum of `field`'s values in each row, float32 (0 where absent)."""
    entries = self._entries[field]
    text = self._substrings(entries["value_start"], entries["value_stop"])
    try:
      values = pc.cast(text, pa.float64()).to_numpy()
    except pa.ArrowInvalid:
      strings = text.to_pylist()
      i = next(k for k, v in enumerate(strings) if _not_a_number(v))
      raise R.IngestError(self.path, int(self.lines[entries["row"][i]]),
                          f"field {field}: expected a number as the value, got "
                          f"{strings[i]!r}") from None
    return np.bincount(entries["row"], weights=values, minlength=self.n).astype(np.float32)


def _not_a_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return True
  return False
