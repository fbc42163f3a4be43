"""tf.data input pipelines over numpy column dicts (the format of `world.log_arrays`).

A training stream is an index stream and a gather: a small Python generator yields each
batch's row numbers (a seeded permutation per epoch, each batch's rows sorted; `row_stream`),
and `gather_rows` gathers the batch in TensorFlow from the columns kept resident as tensors
(`resident_columns`), in a parallel tf.data map (`gathered_batches`, `make_dataset`) or in
the training step (`stages.training`). The tensors share the numpy columns' memory where it
is aligned (`data.world.columns.ALIGNMENT`, DLPack), so the rows are not held twice, and the
datasets keep tf.data's static graph rewrites off: they would serialise (copy) every
captured column.
Batches are dicts keyed by column name with the schema's dtypes: int64 ids [B] and sequences
[B, L], float32 numerics and labels [B]. A column may be kept narrower than that
(`data.world.columns`): a request-level behaviour sequence (`RequestColumn`: its request table and
each impression's row) or an exactly narrowed column (`NarrowColumn`); the gather expands
and casts only the batch's rows, so the per-impression copy of a sequence never exists.
"""

from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Sequence, Tuple
import weakref

import numpy as np
import tensorflow as tf

from data.world import columns as columns_lib
from data.world import io
from data.world import schema as schema_lib

Arrays = Dict[str, np.ndarray]
# A head run on a batch: batch dict -> logits [B].
HeadFn = Callable[[Dict[str, tf.Tensor]], tf.Tensor]


def num_rows(arrays: Arrays) -> int:
  lengths = {len(v) for v in arrays.values()}
  if len(lengths) != 1:
    raise ValueError(f"columns have different lengths: { {k: len(v) for k, v in arrays.items()} }")
  return lengths.pop()


def model_columns(schema: schema_lib.Schema, names: Sequence[str], arrays: Arrays) -> Arrays:
  """The named columns of `arrays`, cast to the schema's dtype (float32 for label columns)."""
  missing = [n for n in names if n not in arrays]
  if missing:
    raise KeyError(f"arrays are missing column(s) {missing}; have {sorted(arrays)}")
  out = {}
  for name in names:
    dtype = schema[name].dtype if name in schema.names else np.float32
    values = arrays[name]
    if isinstance(values, columns_lib.LazyColumn) and values.dtype == np.dtype(dtype):
      out[name] = values  # Stays narrow / request-level; batches expand it.
    else:
      out[name] = np.asarray(values, dtype=dtype)
  return out


def take_rows(arrays: Arrays, rows: columns_lib.Rows) -> Arrays:
  """The same columns restricted to `rows` (a boolean mask, an index array or a slice);
  request-level columns (`data.world.io.RequestColumn`) stay request-level."""
  return io.take_rows(arrays, rows)


def _row_batches(n: int, batch_size: int, shuffle: bool, seed: int, epochs: Optional[int],
                 drop_remainder: bool) -> Iterator[np.ndarray]:
  """Each batch's row numbers: in order, or a permutation seeded by (seed, epoch) per epoch
  with each batch's rows sorted."""
  epoch = 0
  while epochs is None or epoch < epochs:
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
      if order is None:
        yield np.arange(start, min(start + batch_size, n), dtype=np.int64)
      else:
        yield np.sort(order[start:start + batch_size])
    epoch += 1


def _in_order(arrays: Arrays, batch_size: int) -> Iterator[Arrays]:
  """Consecutive slices of every column, `batch_size` rows each (the last may be shorter)."""
  n = num_rows(arrays)
  for start in range(0, n, batch_size):
    yield {k: v[start:start + batch_size] for k, v in arrays.items()}


# tf.data's static rewrites serialise the dataset's graph, with every captured tensor in it:
# one more copy of the resident columns. The stream is an index generator, a map and a
# prefetch; it gains nothing from them.
STREAM_OPTIONS = tf.data.Options()
STREAM_OPTIONS.experimental_optimization.apply_default_optimizations = False
STREAM_OPTIONS.deterministic = True


class ResidentColumn(NamedTuple):
  """A column kept as tensors for the whole run: its values (narrow, or a request-level
  table), the impressions' rows into them (or None) and the dtype batches carry; a ragged
  request table (`data.world.columns.RaggedTable`) also has its rows' starts and lengths."""
  values: tf.Tensor
  rows: Optional[tf.Tensor]
  dtype: tf.DType
  starts: Optional[tf.Tensor] = None
  lengths: Optional[tf.Tensor] = None
  width: int = 0
  pad: int = 0

  def gather(self, index: tf.Tensor) -> tf.Tensor:
    """The rows `index` of the values (request rows, for a request-level column)."""
    if self.starts is None:
      return tf.cast(tf.gather(self.values, index), self.dtype)
    positions = tf.range(self.width, dtype=tf.int64)
    starts = tf.cast(tf.gather(self.starts, index), tf.int64)[:, None]
    valid = positions < tf.cast(tf.gather(self.lengths, index), tf.int64)[:, None]
    last = tf.maximum(tf.size(self.values, out_type=tf.int64) - 1, 0)
    entries = tf.gather(self.values, tf.minimum(starts + positions, last))
    return tf.where(valid, tf.cast(entries, self.dtype), tf.constant(self.pad, self.dtype))


def resident_tensor(values: np.ndarray) -> tf.Tensor:
  """`values` as a tensor: the same memory where it is aligned (DLPack), else a copy."""
  if values.size and values.nbytes >= 1 << 20 and columns_lib.is_aligned(values):
    return tf.experimental.dlpack.from_dlpack(values.__dlpack__())
  return tf.convert_to_tensor(values)


def resident_columns(arrays: Arrays, names: Optional[Sequence[str]] = None
                     ) -> Dict[str, ResidentColumn]:
  """The named columns (default: all) as ResidentColumns; request-level columns of one row
  index share its tensor."""
  shared: Dict[int, tf.Tensor] = {}
  out = {}
  for name in (list(arrays) if names is None else names):
    values, rows, dtype = columns_lib.stored(arrays[name])
    row_tensor = None
    if rows is not None:
      if id(rows) not in shared:
        shared[id(rows)] = resident_tensor(rows)
      row_tensor = shared[id(rows)]
    if isinstance(values, columns_lib.RaggedTable):
      # Every row empty (a log without behaviour history): one pad entry, so the gather of
      # the masked-out positions has a value to read.
      entries = values.values if values.values.size else np.full(1, values.pad,
                                                                  values.values.dtype)
      out[name] = ResidentColumn(
          resident_tensor(entries), row_tensor, tf.as_dtype(dtype),
          resident_tensor(values.starts), resident_tensor(values.lengths), values.width,
          values.pad)
    else:
      out[name] = ResidentColumn(resident_tensor(values), row_tensor, tf.as_dtype(dtype))
  return out


def gather_rows(columns: Dict[str, ResidentColumn], rows: tf.Tensor) -> Dict[str, tf.Tensor]:
  """The batch of `rows` (int64 [B]) of every column, in its batch dtype."""
  out = {}
  request_rows: Dict[int, tf.Tensor] = {}  # one gather per shared row index
  for name, column in columns.items():
    index = rows
    if column.rows is not None:
      if id(column.rows) not in request_rows:
        request_rows[id(column.rows)] = tf.gather(column.rows, rows)
      index = request_rows[id(column.rows)]
    out[name] = column.gather(index)
  return out


def row_stream(row_batches: Callable[[], Iterator[np.ndarray]],
               prefetch: int = 2) -> tf.data.Dataset:
  """The row numbers of each batch (int64 [B]) that `row_batches()` yields, as a dataset."""
  rows = tf.data.Dataset.from_generator(row_batches,
                                        output_signature=tf.TensorSpec([None], tf.int64))
  return rows.prefetch(prefetch).with_options(STREAM_OPTIONS)


def gathered_batches(arrays: Arrays, row_batches: Callable[[], Iterator[np.ndarray]],
                     names: Optional[Sequence[str]] = None, parallel_calls: int = 2,
                     prefetch: int = 2) -> tf.data.Dataset:
  """The batches whose row numbers `row_batches()` yields, gathered from the named columns of
  `arrays` (default: all), kept resident, in a parallel tf.data map.

  Under op determinism (`tf.config.experimental.enable_op_determinism`) tf.data rewrites
  every dataset when its iterator is made (make_deterministic), and the rewrite deep-copies
  every tensor the dataset captures: the resident columns are then held twice. A training
  run's rows are gathered in its step instead (`stages.training`), from the same row stream.
  """
  columns = resident_columns(arrays, names)
  rows = tf.data.Dataset.from_generator(row_batches,
                                        output_signature=tf.TensorSpec([None], tf.int64))
  batches = rows.map(lambda index: gather_rows(columns, index), num_parallel_calls=parallel_calls,
                     deterministic=True)
  return batches.prefetch(prefetch).with_options(STREAM_OPTIONS)


def make_dataset(arrays: Arrays, batch_size: int = 1024,
                 columns: Optional[Sequence[str]] = None,
                 schema: Optional[schema_lib.Schema] = None, shuffle: bool = True,
                 seed: int = 0, epochs: Optional[int] = 1, drop_remainder: bool = False,
                 prefetch: int = 2) -> tf.data.Dataset:
  """A dataset of batch dicts over the rows of `arrays`, gathered in TensorFlow from the
  columns kept resident (`gathered_batches`).

  Args:
    arrays: column name -> numpy array (or `data.world.columns` column), one row per impression.
    batch_size: rows per batch.
    columns: the columns to keep (default: all); with `schema`, they are cast to its dtypes.
    schema: used to cast feature columns (int64 / float32); labels become float32.
    shuffle: a fresh seeded permutation of the rows every epoch (rows within a batch sorted,
      which keeps gathers cache-friendly and does not change what a batch contains).
    seed: seed of the permutations.
    epochs: passes over the data; None repeats forever.
    drop_remainder: drop the last, smaller batch of each epoch.
  """
  if columns is not None:
    arrays = {k: arrays[k] for k in columns} if schema is None else model_columns(
        schema, columns, arrays)
  elif schema is not None:
    arrays = model_columns(schema, list(arrays), arrays)
  n = num_rows(arrays)
  return gathered_batches(
      arrays, lambda: _row_batches(n, batch_size, shuffle, seed, epochs, drop_remainder),
      prefetch=prefetch)


def column_spec(arrays: Arrays) -> Dict[str, tf.TensorSpec]:
  """The batch signature of `arrays`: one TensorSpec per column, any number of rows."""
  return {k: tf.TensorSpec((None,) + tuple(v.shape[1:]), tf.as_dtype(v.dtype))
          for k, v in arrays.items()}


class Predictor:
  """`fn(batch) -> [B]` over every row of column dicts, in order, traced once per signature.

  A head is scored many times in a run (every validation check, then the evaluation); a fresh
  `tf.function` per call re-traced the whole head each time (0.9 s of CPU per check on the
  fine CTR model). A Predictor compiles `fn` once for the signature of the columns it reads,
  with an unknown batch size, so the last, shorter batch reuses the same graph too.

  Args:
    fn: batch dict -> logits [B] (e.g. a head in inference mode).
    columns: the columns `fn` reads (default: every column it is given).
    batch_size: rows per call of the compiled function.
  """

  def __init__(self, fn: HeadFn, columns: Optional[Sequence[str]] = None,
               batch_size: int = 8192):
    self._fn = fn
    self.columns = None if columns is None else tuple(columns)
    self.batch_size = batch_size
    self._compiled: Dict[Tuple[Tuple[str, str, Tuple[Optional[int], ...]], ...], HeadFn] = {}

  def __call__(self, arrays: Arrays) -> np.ndarray:
    if self.columns is not None:
      arrays = {k: arrays[k] for k in self.columns}
    compiled = self.compiled(column_spec(arrays))
    outputs = [compiled({k: tf.convert_to_tensor(v) for k, v in batch.items()}).numpy()
               for batch in _in_order(arrays, self.batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros([0], np.float32)

  def compiled(self, spec: Dict[str, tf.TensorSpec]) -> HeadFn:
    """The function compiled for `spec` (traced on its first call)."""
    key = tuple(sorted((k, s.dtype.name, tuple(s.shape.as_list())) for k, s in spec.items()))
    if key not in self._compiled:
      fn = self._fn
      self._compiled[key] = tf.function(lambda batch: fn(batch), input_signature=[spec])
    return self._compiled[key]


def predict(fn: HeadFn, arrays: Arrays, batch_size: int = 8192,
            columns: Optional[Sequence[str]] = None) -> np.ndarray:
  """Runs `fn(batch) -> [B]` (e.g. a head, or `lambda b: model(b, training=False)`) over all
  rows in order, in a compiled function, and returns the concatenated numpy outputs. Scoring
  the same head again? Keep a `Predictor` (or `head_predictor`) instead: it traces once."""
  return Predictor(fn, columns, batch_size)(arrays)


_HEAD_PREDICTORS: "weakref.WeakKeyDictionary[Any, Dict[str, Predictor]]" = (
    weakref.WeakKeyDictionary())


def head_predictor(model: Any, head: str) -> Predictor:
  """The one Predictor of `model`'s `head` ('student' or 'teacher') in inference mode, over
  the columns the head reads: validation checks and the final evaluation share its trace."""
  predictors = _HEAD_PREDICTORS.setdefault(model, {})
  if head not in predictors:
    if head == "student":
      layer = model.student
      fn: HeadFn = lambda batch: layer(batch, training=False)
    elif head == "teacher":
      layer = model.teacher
      fn = lambda batch: model.teacher_logits(batch, training=False)
    else:
      raise ValueError(f"head must be 'student' or 'teacher', got {head!r}")
    columns = list(getattr(layer, "input_names", None) or []) or None
    predictors[head] = Predictor(fn, columns)
  return predictors[head]
