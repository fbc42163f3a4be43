"""Schema-driven input embeddings: one `EmbeddingBank` of tables, one `FeatureEmbedding` per head.

Every feature is embedded: categorical ids directly, numeric values after bucketising at the
schema's `buckets`, behaviour sequences element-wise and then pooled. A sequence is pooled over
its valid entries only (found with `tf.where`, pooled with segment sums): histories are mostly
padding, and embedding the padding made most of a step's sparse gradient rows point at one
padding row. Tables live in an `EmbeddingBank` so that a teacher and a student can read the
*same* variables (the paper's shared embeddings, which roughly halve the parameter traffic); a
head that must not share a table (the paper's best CTR setting gives the teacher its own
`user_id` embedding) reads it from a second, private bank instead.

Vocabulary groups: a sequence of ids shares its table with the item-side feature of the same
vocabulary (`hist_item_ids` with `item_id`, and so on), so a history entry and a candidate item
are embedded in one space. That is also what target attention compares.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from data.world import schema as schema_lib
from models import distribute

# Sequence feature -> the candidate-side categorical feature whose vocabulary (and table) it
# shares. The table is named after the candidate-side feature.
VOCABULARY_GROUPS: Dict[str, str] = {
    "hist_item_ids": "item_id",
    "hist_category_ids": "item_category",
    "hist_shop_ids": "item_shop",
}

POOLINGS = ("mean", "attention")

FeatureLike = Union[schema_lib.Feature, str]
# Lookups (or pooled sequences) shared by the heads of one step, by (table id, feature, ...).
Cache = Dict[Tuple[Any, ...], tf.Tensor]


class MissingFeatureError(ValueError):
  """A batch lacks a feature that a head reads."""


def vocabulary_group(feature: schema_lib.Feature) -> str:
  """Name of the table `feature` is looked up in."""
  return VOCABULARY_GROUPS.get(feature.name, feature.name)


def table_rows(feature: schema_lib.Feature) -> int:
  """Rows of the feature's table: the vocabulary plus one out-of-vocabulary row, or buckets + 1."""
  if feature.kind == schema_lib.NUMERIC:
    return len(feature.buckets) + 1
  return feature.vocab_size + 1


def check_batch(batch: Dict[str, tf.Tensor], names: Sequence[str], who: str) -> None:
  """Raises MissingFeatureError naming every feature of `names` that `batch` lacks."""
  missing = [n for n in names if n not in batch]
  if missing:
    raise MissingFeatureError(
        f"batch is missing feature(s) {missing} required by {who!r}; "
        f"batch has {sorted(batch)}")


class EmbeddingBank(tf.keras.layers.Layer):
  """Owns the embedding tables, one per vocabulary group, created on demand.

  Heads that are given the same bank share its variables: `bank.table('item_id')` is one
  `tf.Variable`, whichever head reads it.

  Args:
    dim: embedding width of every table.
    initializer_stddev: stddev of the truncated-normal initialiser.
  """

  def __init__(self, dim: int = 16, initializer_stddev: float = 0.05, **kwargs: Any) -> None:
    super().__init__(**kwargs)
    self.dim = dim
    self._stddev = initializer_stddev
    self._tables: Dict[str, tf.Variable] = {}
    self._rows: Dict[str, int] = {}
    self.built = True  # Tables are created by `ensure`, not by a first call.

  def ensure(self, features: Sequence[schema_lib.Feature]) -> "EmbeddingBank":
    """Creates the tables `features` need and that the bank does not hold yet."""
    for feature in features:
      group, rows = vocabulary_group(feature), table_rows(feature)
      if group in self._tables:
        if rows > self._rows[group]:
          raise ValueError(f"feature {feature.name!r} needs {rows} rows in table {group!r}, "
                           f"which was created with {self._rows[group]}")
        continue
      self._rows[group] = rows
      with distribute.embedding_tables():  # split across parameter servers, if any
        self._tables[group] = self.add_weight(
            name=f"{group}_embedding", shape=(rows, self.dim), trainable=True,
            initializer=tf.keras.initializers.TruncatedNormal(stddev=self._stddev))
    return self

  def has(self, feature: FeatureLike) -> bool:
    name = feature if isinstance(feature, str) else vocabulary_group(feature)
    return VOCABULARY_GROUPS.get(name, name) in self._tables

  def table(self, feature: FeatureLike) -> tf.Variable:
    """The table variable for a feature (or group name)."""
    name = feature if isinstance(feature, str) else vocabulary_group(feature)
    name = VOCABULARY_GROUPS.get(name, name)
    if name not in self._tables:
      raise KeyError(f"embedding bank {self.name!r} has no table for {name!r}")
    return self._tables[name]

  @property
  def groups(self) -> List[str]:
    return list(self._tables)

  def call(self, inputs: Any) -> tf.Tensor:  # The bank is looked up through `table`, never called.
    raise NotImplementedError("use EmbeddingBank.table(feature)")


def lookup_ids(feature: schema_lib.Feature, values: tf.Tensor) -> tf.Tensor:
  """Maps raw ids or numeric values to table rows; unseen ids go to the out-of-vocabulary row."""
  if feature.kind == schema_lib.NUMERIC:
    values = tf.cast(values, tf.float32)
    return tf.raw_ops.Bucketize(input=values, boundaries=list(feature.buckets))
  ids = tf.cast(values, tf.int64)
  in_vocab = tf.logical_and(ids >= 0, ids < feature.vocab_size)
  return tf.where(in_vocab, ids, tf.constant(feature.vocab_size, tf.int64))


def valid_entries(ids: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """(rows [V], ids [V]) of the non-padding entries of a [B, L] id sequence, row-major.

  Histories are mostly padding (about 2 valid entries in 50 slots on the small world), so the
  pooling below embeds and differentiates only these V entries, never the padding.
  """
  positions = tf.where(tf.not_equal(ids, schema_lib.PAD_ID))
  return positions[:, 0], tf.gather_nd(ids, positions)


def segment_mean(entries: tf.Tensor, rows: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
  """[B, D] mean of the [V, D] `entries` of each batch row; zeros for a row without entries."""
  total = tf.math.unsorted_segment_sum(entries, rows, batch_size)
  count = tf.math.unsorted_segment_sum(tf.ones_like(rows, entries.dtype), rows, batch_size)
  return tf.math.divide_no_nan(total, count[:, None])


def segment_attention(entries: tf.Tensor, rows: tf.Tensor, query: tf.Tensor) -> tf.Tensor:
  """Scaled dot-product attention of each row's candidate (`query`, [B, D]) over its entries.

  `entries` [V, D] belong to batch rows `rows` [V]; the softmax runs over each row's entries
  only, and a row without entries pools to zeros.
  """
  batch_size = tf.shape(query, out_type=rows.dtype)[0]
  scale = tf.math.rsqrt(tf.cast(tf.shape(query)[-1], entries.dtype))
  scores = tf.reduce_sum(entries * tf.gather(query, rows), axis=-1) * scale
  # Softmax is shift-invariant, so the per-row maximum needs no gradient.
  top = tf.stop_gradient(tf.math.unsorted_segment_max(scores, rows, batch_size))
  weights = tf.exp(scores - tf.gather(top, rows))
  weights /= tf.gather(tf.math.unsorted_segment_sum(weights, rows, batch_size), rows)
  return tf.math.unsorted_segment_sum(weights[:, None] * entries, rows, batch_size)


class FeatureEmbedding(tf.keras.layers.Layer):
  """Embeds a head's features from a batch dict and concatenates them into one [B, N] tensor.

  Args:
    features: the schema features this head reads, in order.
    bank: the (usually shared) EmbeddingBank; missing tables are created in it.
    private_bank: optional bank of tables this head does not share; a feature whose group it
      holds is looked up there instead of in `bank`.
    sequence_pooling: 'mean', or 'attention' (target attention with the candidate's embedding
      of the same vocabulary group; the candidate feature must be among `features`).
    numeric_log1p: also append log1p(max(x, 0)) of every numeric feature.
  """

  def __init__(self, features: Sequence[schema_lib.Feature], bank: EmbeddingBank,
               private_bank: Optional[EmbeddingBank] = None, sequence_pooling: str = "mean",
               numeric_log1p: bool = False, **kwargs: Any) -> None:
    super().__init__(**kwargs)
    if sequence_pooling not in POOLINGS:
      raise ValueError(f"sequence_pooling must be one of {POOLINGS}, got {sequence_pooling!r}")
    if not features:
      raise ValueError("a FeatureEmbedding needs at least one feature")
    self.features = list(features)
    self.sequence_pooling = sequence_pooling
    self.numeric_log1p = numeric_log1p
    self.bank = bank
    self.private_bank = private_bank
    shared = [f for f in self.features if not (private_bank and private_bank.has(f))]
    bank.ensure(shared)
    self._check_attention_targets()

  @property
  def input_names(self) -> List[str]:
    return [f.name for f in self.features]

  def _check_attention_targets(self) -> None:
    if self.sequence_pooling != "attention":
      return
    names = set(self.input_names)
    for f in self.features:
      if f.kind == schema_lib.SEQUENCE and VOCABULARY_GROUPS.get(f.name) not in names:
        raise ValueError(f"target attention over {f.name!r} needs the candidate feature "
                         f"{VOCABULARY_GROUPS.get(f.name)!r} among the head's features")

  def table(self, feature: schema_lib.Feature) -> tf.Variable:
    """The variable this head reads `feature` from (private if unshared, else shared)."""
    if self.private_bank is not None and self.private_bank.has(feature):
      return self.private_bank.table(feature)
    return self.bank.table(feature)

  def embed(self, feature: schema_lib.Feature, values: tf.Tensor) -> tf.Tensor:
    # A gather; on a table split across parameter servers it fetches each shard's rows only.
    return tf.nn.embedding_lookup(self.table(feature), lookup_ids(feature, values))

  def _cached(self, cache: Optional[Cache], key: Tuple[Any, ...],
              compute: Callable[..., tf.Tensor]) -> tf.Tensor:
    """`compute()`, or the tensor another head already computed from the same table."""
    if cache is None:
      return compute()
    if key not in cache:
      cache[key] = compute()
    return cache[key]

  def call(self, batch: Dict[str, tf.Tensor], training: Optional[bool] = None,
           cache: Optional[Cache] = None) -> tf.Tensor:
    """[B, N] embeddings of `batch`.

    `cache`: a dict shared by the heads of one step. A lookup (or pooled sequence) from a
    shared table is computed once and reused by every head, so shared embeddings cost one
    gather and one sparse gradient, as a shared input layer should.
    """
    check_batch(batch, self.input_names, self.name)
    return tf.concat(self.parts(batch, self.features, cache), axis=-1)

  def parts(self, batch: Dict[str, tf.Tensor], features: Sequence[schema_lib.Feature],
            cache: Optional[Cache] = None) -> List[tf.Tensor]:
    """The embedding parts of `features` (some of this head's, in its order), one per input.

    Lets a ranker embed the request's own features once per request and the candidates'
    per candidate; `part_widths` says how wide each part is.
    """
    single = {}
    for f in features:
      if f.kind != schema_lib.SEQUENCE:
        key: Tuple[Any, ...] = (id(self.table(f)), f.name)
        single[f.name] = self._cached(cache, key, lambda f=f: self.embed(f, batch[f.name]))
    parts = []
    for f in features:
      if f.kind == schema_lib.SEQUENCE:
        # The attention query comes from the same table (same vocabulary group).
        key = (id(self.table(f)), f.name, self.sequence_pooling)
        parts.append(self._cached(cache, key, lambda f=f: self._pool(f, batch[f.name], single)))
      else:
        parts.append(single[f.name])
        if f.kind == schema_lib.NUMERIC and self.numeric_log1p:
          value = tf.cast(batch[f.name], tf.float32)
          parts.append(tf.math.log1p(tf.maximum(value, 0.0))[:, None])
    return parts

  def part_widths(self) -> Dict[str, int]:
    """Width of each feature's slice of the concatenated output."""
    widths = {}
    for f in self.features:
      extra = int(f.kind == schema_lib.NUMERIC and self.numeric_log1p)
      widths[f.name] = int(self.table(f).shape[1]) + extra
    return widths

  def _pool(self, feature: schema_lib.Feature, ids: tf.Tensor,
            single: Dict[str, tf.Tensor]) -> tf.Tensor:
    ids = tf.cast(ids, tf.int64)
    rows, valid = valid_entries(ids)
    entries = self.embed(feature, valid)
    if self.sequence_pooling == "attention":
      return segment_attention(entries, rows, single[VOCABULARY_GROUPS[feature.name]])
    return segment_mean(entries, rows, tf.shape(ids, out_type=tf.int64)[0])
