"""Columns kept in memory narrower than the arrays they stand for, expanded per batch.

A training run holds every training row in memory (its batches are a global permutation of
them), so the bytes per row decide how memory grows with the days. Two kinds of column keep
those bytes down without changing a single value a model sees:

  RequestColumn  a request-level column (the behaviour sequence) seen as one row per
                 impression: the request table and each impression's row in it;
  NarrowColumn   an impression column stored in the narrowest dtype that holds its values
                 exactly (`narrowest_dtype`: int8 ids of a 7-value vocabulary, int8 labels,
                 int16 counts kept as float32), expanded to its logical dtype when indexed.

Both index like the array they stand for: `column[rows]` (an index array, a mask or a slice)
gives those rows in the logical `dtype`; `take_rows` keeps the result lazy; `np.asarray`,
operators and numpy functions expand every row. `stored()` gives what is kept (the table and
row index, or the narrow values) for code that gathers batches itself (models.pipeline).

Dicts of such columns are cut and grown here too: `take_rows` (optionally consuming its input
so the rows are never held twice), `append_rows` (widening a narrow column where the new rows
need it), and `Filler`, which reads days one at a time into columns allocated once.
"""

from typing import Any, Dict, List, Optional, Tuple, Union, cast

import numpy as np
import numpy.typing as npt

ALIGNMENT = 64  # bytes: TensorFlow can then use the memory as it is (models.pipeline)
_INTS = (np.int8, np.int16, np.int32, np.int64)
_FLOAT_AS_INT = (np.int8, np.int16)  # a float32 column of small whole numbers
# Rows of a column: a slice, a boolean mask or an index array.
Rows = Union[slice, np.ndarray]


class LazyColumn(np.lib.mixins.NDArrayOperatorsMixin):
  """What a RequestColumn and a NarrowColumn share: indexing, expansion, numpy behaviour."""

  dtype: np.dtype

  def _stored_rows(self, rows: Rows) -> np.ndarray:
    raise NotImplementedError

  def take_rows(self, rows: Rows) -> "LazyColumn":
    raise NotImplementedError

  def __len__(self) -> int:
    return self.shape[0]

  @property
  def shape(self) -> Tuple[int, ...]:
    raise NotImplementedError

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __getitem__(self, rows: Rows) -> np.ndarray:
    return self._stored_rows(rows).astype(self.dtype, copy=False)

  def __array__(self, dtype: Optional[npt.DTypeLike] = None,
                copy: Optional[bool] = None) -> np.ndarray:
    values = self[slice(None)]
    return values if dtype is None else values.astype(dtype, copy=False)

  def __getattr__(self, name: str) -> Any:
    """Any other ndarray attribute (`reshape`, `astype`, `sum`...) on the expanded array."""
    if name.startswith("_") or not hasattr(np.ndarray, name):
      raise AttributeError(name)
    return getattr(np.asarray(self), name)

  def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
    inputs = tuple(np.asarray(x) if isinstance(x, LazyColumn) else x for x in inputs)
    return getattr(ufunc, method)(*inputs, **kwargs)


class RequestColumn(LazyColumn):
  """A request-level column seen as one row per impression, without copying it per impression.

  `table` holds one row per request (e.g. a behaviour sequence [R, L], ids as int32 where the
  vocabulary allows); `rows[i]` is impression i's request row. Indexing with impression rows
  expands only those rows, in `dtype`; `take_rows` keeps the result request-level.
  """

  def __init__(self, table: Any, rows: np.ndarray, dtype: npt.DTypeLike):
    self.table, self.rows, self.dtype = table, rows, np.dtype(dtype)  # table: or RaggedTable

  @property
  def shape(self) -> Tuple[int, ...]:
    return cast(Tuple[int, ...], (len(self.rows),) + self.table.shape[1:])

  def _stored_rows(self, rows: Rows) -> np.ndarray:
    return cast(np.ndarray, self.table[self.rows[rows]])

  def take_rows(self, rows: Rows) -> "RequestColumn":
    """The impressions `rows` of this column, still one row per request."""
    return RequestColumn(self.table, take(self.rows, rows), self.dtype)

  def stored(self) -> Tuple[Any, Optional[np.ndarray]]:
    return self.table, self.rows

  @property
  def nbytes(self) -> int:
    return int(self.table.nbytes + self.rows.nbytes)


class NarrowColumn(LazyColumn):
  """An impression column stored as `values` (a narrower dtype holding every value exactly),
  seen as `dtype`."""

  def __init__(self, values: np.ndarray, dtype: npt.DTypeLike):
    self.values, self.dtype = values, np.dtype(dtype)

  @property
  def shape(self) -> Tuple[int, ...]:
    return self.values.shape

  def _stored_rows(self, rows: Rows) -> np.ndarray:
    return self.values[rows]

  def take_rows(self, rows: Rows) -> "NarrowColumn":
    return NarrowColumn(take(self.values, rows), self.dtype)

  def stored(self) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    return self.values, None

  @property
  def nbytes(self) -> int:
    return int(self.values.nbytes)


class RaggedTable:
  """A table [R, width] whose rows are padded at their end with `pad` (a behaviour sequence:
  the last clicks, most recent first, then PAD_ID), kept as each row's prefix up to its last
  entry that is not `pad`: `values` holds the prefixes one after another, row r's starting
  at `starts[r]`, `lengths[r]` long. Exact for any table (a pad inside a prefix is kept).
  Indexing with request rows gives the dense rows; `np.asarray` the whole table.
  """

  def __init__(self, values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int,
               pad: int):
    self.values, self.starts, self.lengths = values, starts, lengths
    self.width, self.pad = int(width), pad

  @classmethod
  def from_dense(cls, table: np.ndarray, pad: int) -> "RaggedTable":
    kept = table != pad
    width = table.shape[1]
    lengths = np.where(kept.any(axis=1), width - np.argmax(kept[:, ::-1], axis=1), 0)
    values = table[np.arange(width)[None, :] < lengths[:, None]]  # row-major: prefix by prefix
    ends = np.cumsum(lengths)
    return cls(values, narrowed(ends - lengths), narrowed(lengths), width, pad)

  @classmethod
  def concatenate(cls, tables: List["RaggedTable"]) -> "RaggedTable":
    """One table of the rows of `tables` (each freed from the list once copied)."""
    offsets = np.cumsum([0] + [len(t.values) for t in tables[:-1]])
    starts = [t.starts.astype(np.int64) + offset for t, offset in zip(tables, offsets)]
    width, pad = tables[0].width, tables[0].pad
    values = np.concatenate([t.values for t in tables])
    lengths = np.concatenate([t.lengths for t in tables])
    tables.clear()
    return cls(values, narrowed(np.concatenate(starts)), lengths, width, pad)

  @property
  def shape(self) -> Tuple[int, int]:
    return (len(self.starts), self.width)

  @property
  def dtype(self) -> np.dtype:
    return self.values.dtype

  @property
  def nbytes(self) -> int:
    return int(self.values.nbytes + self.starts.nbytes + self.lengths.nbytes)

  def __len__(self) -> int:
    return len(self.starts)

  def __getitem__(self, rows: Rows) -> np.ndarray:
    starts = self.starts[rows].astype(np.int64)
    positions = np.arange(self.width)
    index = starts[..., None] + positions
    valid = positions < self.lengths[rows][..., None]
    if not len(self.values):
      return np.full(index.shape, self.pad, self.values.dtype)
    return cast(np.ndarray, np.where(valid, self.values[np.minimum(index, len(self.values) - 1)],
                                     self.values.dtype.type(self.pad)))

  def __array__(self, dtype: Optional[npt.DTypeLike] = None,
                copy: Optional[bool] = None) -> np.ndarray:
    dense = self[slice(None)]
    return dense if dtype is None else dense.astype(dtype, copy=False)


def aligned_empty(shape: Tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
  """An uninitialised C-contiguous array whose data starts on an ALIGNMENT-byte boundary."""
  dtype = np.dtype(dtype)
  shape = tuple(int(d) for d in shape)
  count = int(np.prod(shape, dtype=np.int64))
  buffer = np.empty(count * dtype.itemsize + ALIGNMENT, np.uint8)
  start = (-buffer.ctypes.data) % ALIGNMENT
  return buffer[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


def is_aligned(values: np.ndarray) -> bool:
  return bool(values.flags.c_contiguous and values.ctypes.data % ALIGNMENT == 0)


def take(values: np.ndarray, rows: Rows) -> np.ndarray:
  """`values[rows]` (a boolean mask, an index array or a slice), copied into aligned memory."""
  values = np.asarray(values)
  if isinstance(rows, slice):
    picked = values[rows]
    out = aligned_empty(picked.shape, values.dtype)
    out[...] = picked
    return out
  rows = np.asarray(rows)
  if rows.dtype == bool:
    out = aligned_empty((int(np.count_nonzero(rows)),) + values.shape[1:], values.dtype)
    return np.compress(rows, values, axis=0, out=out)
  out = aligned_empty(rows.shape + values.shape[1:], values.dtype)
  return np.take(values, rows, axis=0, out=out)


def stored(column: Any) -> Tuple[Any, Optional[np.ndarray], np.dtype]:
  """(values kept (an array or a RaggedTable), their row index or None, the logical dtype) of
  any column."""
  if isinstance(column, (RequestColumn, NarrowColumn)):
    values, rows = column.stored()
    return values, rows, column.dtype
  values = np.asarray(column)
  return values, None, values.dtype


def narrowest_dtype(values: np.ndarray) -> np.dtype:
  """The narrowest dtype that holds every value of `values` exactly: the smallest signed
  integer type spanning an integer column's range; int8 or int16 for a float column of whole
  numbers in their range (no NaN); otherwise the column's own dtype."""
  values = np.asarray(values)
  if values.size == 0 or values.dtype.kind not in "iuf":
    return values.dtype
  if values.dtype.kind in "iu":
    low, high = int(values.min()), int(values.max())
    for candidate in _INTS:
      info = np.iinfo(candidate)
      if info.min <= low and high <= info.max:
        return np.dtype(candidate) if info.bits < values.dtype.itemsize * 8 else values.dtype
    return values.dtype
  if not np.isfinite(values).all():
    return values.dtype
  lowest, highest = float(values.min()), float(values.max())
  for candidate in _FLOAT_AS_INT:
    info = np.iinfo(candidate)
    if info.min <= lowest and highest <= info.max and info.bits < values.dtype.itemsize * 8:
      as_int = values.astype(candidate)
      if np.array_equal(as_int.astype(values.dtype), values):
        return np.dtype(candidate)
      return values.dtype  # not whole numbers: a wider integer type would not hold them either
  return values.dtype


def narrowed(values: np.ndarray) -> np.ndarray:
  """`values` in `narrowest_dtype(values)` (the same array if that is its own dtype)."""
  return values.astype(narrowest_dtype(values), copy=False)


def concatenate(pieces: List[np.ndarray], dtype: npt.DTypeLike) -> Any:
  """Pieces of one column (each in its own exact dtype) as one column of logical `dtype`: a
  NarrowColumn where their common type is narrower, else a plain array. The pieces list is
  emptied as it goes, so the pieces are freed as soon as they are copied."""
  common = np.result_type(*pieces) if pieces else np.dtype(dtype)
  dtype = np.dtype(dtype)
  if common.itemsize >= dtype.itemsize or common.kind not in "iuf":
    common = dtype
  out = aligned_empty((sum(len(p) for p in pieces),) + pieces[0].shape[1:] if pieces else (0,),
                     common)
  start = 0
  while pieces:
    piece = pieces.pop(0)
    out[start:start + len(piece)] = piece
    start += len(piece)
  return out if common == dtype else NarrowColumn(out, dtype)


def narrow_column(values: np.ndarray) -> Any:
  """`values` (in its logical dtype) as a NarrowColumn where a narrower dtype holds it
  exactly, else unchanged."""
  narrow = narrowest_dtype(values)
  if narrow == values.dtype:
    return values
  out = aligned_empty(values.shape, narrow)
  out[...] = values
  return NarrowColumn(out, values.dtype)


def take_rows(arrays: Dict[str, Any], rows: Rows, consume: bool = False) -> Dict[str, Any]:
  """The same columns restricted to `rows` (a boolean mask, an index array or a slice);
  request-level columns stay request-level, those of one row index sharing its taken copy.

  consume=True empties `arrays` column by column as they are taken, so a column's memory can
  go as soon as its copy exists: the rows are never held twice (the caller must hold no other
  reference to them).
  """
  out: Dict[str, Any] = {}
  taken_index: Dict[int, np.ndarray] = {}
  for name in list(arrays):
    column = arrays.pop(name) if consume else arrays[name]
    if isinstance(column, RequestColumn):
      key = id(column.rows)
      if key not in taken_index:
        taken_index[key] = take(column.rows, rows)
      out[name] = RequestColumn(column.table, taken_index[key], column.dtype)
    elif isinstance(column, LazyColumn):
      out[name] = column.take_rows(rows)
    else:
      out[name] = take(column, rows)
    del column
  return out


def append_rows(arrays: Dict[str, Any], extra: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """The columns of `arrays` that `extra` also has, with `extra`'s rows appended; a
  request-level column gets `extra`'s rows as new request rows."""
  out: Dict[str, Any] = {}
  for name, values in arrays.items():
    if name not in extra:
      continue
    if isinstance(values, RequestColumn):
      added = np.asarray(extra[name])
      # The narrowest type that holds both exactly (a table may be narrower than its schema).
      dtype = np.promote_types(values.table.dtype, narrowest_dtype(added))
      added = added.astype(dtype)
      rows = np.arange(len(added)) + len(values.table)
      table = values.table
      if isinstance(table, RaggedTable):
        widened = RaggedTable(table.values.astype(dtype), table.starts,
                                          table.lengths, table.width, table.pad)
        table = RaggedTable.concatenate(
            [widened, RaggedTable.from_dense(added, table.pad)])
      else:
        table = np.concatenate([table.astype(dtype, copy=False), added])
      out[name] = RequestColumn(table,
                                np.concatenate([values.rows, rows.astype(values.rows.dtype)]),
                                values.dtype)
    elif isinstance(values, NarrowColumn):
      out[name] = narrow_column(
          np.concatenate([np.asarray(values), np.asarray(extra[name], values.dtype)]))
    else:
      out[name] = np.concatenate([values, extra[name]])
  return out


class Filler:
  """Columns of `n` rows filled day by day, each allocated once (aligned, `data.world.columns`) in
  the first day's dtype and widened if a later day needs a wider one: reading many days costs
  the result and one day, never a second copy of the result."""

  def __init__(self, n: int):
    self.n, self.filled = n, 0
    self.columns: Dict[str, np.ndarray] = {}

  def put(self, name: str, values: np.ndarray) -> None:
    """`values` as the next rows of column `name`."""
    column = self.columns.get(name)
    if column is None or np.result_type(column.dtype, values.dtype) != column.dtype:
      dtype = values.dtype if column is None else np.result_type(column.dtype, values.dtype)
      wider = aligned_empty((self.n,) + values.shape[1:], dtype)
      if column is not None:
        wider[:self.filled] = column[:self.filled]
      self.columns[name] = column = wider
    column[self.filled:self.filled + len(values)] = values

  def extend(self, day: Dict[str, np.ndarray], n: int) -> None:
    """One day's `n` rows of every column (the dict is emptied, freeing each as it is
    copied)."""
    for name in list(day):
      self.put(name, day.pop(name))
    self.filled += n

  def column(self, name: str, dtype: Optional[npt.DTypeLike], keep: bool = False) -> Any:
    """The filled column `name` in logical `dtype` (None: as stored): a NarrowColumn where it
    is narrower. The filler lets go of it unless `keep`."""
    values = self.columns.get(name) if keep else self.columns.pop(name, None)
    if values is None:  # no rows were read
      return aligned_empty((0,), dtype or np.int64)
    dtype = np.dtype(dtype or values.dtype)
    if values.dtype == dtype or values.dtype.itemsize >= dtype.itemsize:
      return values.astype(dtype, copy=False)
    return NarrowColumn(values, dtype)
