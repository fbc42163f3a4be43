"""Scoring heads: one logit per (user, item) row of a batch dict.

Every head exposes the same small contract, which distillation and export rely on:
  - `input_features` / `input_names`: the schema features it reads (and nothing else);
  - `architecture`: 'dnn' or 'two_tower';
  - `call(batch, training) -> logits [B]`.

`DNNRanker` is an MLP over the concatenated embeddings of whatever features it is given (the
fine rankers, and the MD / PFD+MD / LUPI teachers). `TwoTowerScorer` is the coarse ranker: a
user tower and an item tower whose L2-normalised outputs are dotted and scaled, so item vectors
can be precomputed and coarse serving is one matrix product. Given pair features on its user
side, it is the paper's inner-product PFD teacher for the coarse stage.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from data.world import schema as schema_lib
from models import inputs as inputs_lib
from models import towers

DNN, TWO_TOWER = "dnn", "two_tower"
ARCHITECTURES = (DNN, TWO_TOWER)
USER_SIDE = (schema_lib.USER, schema_lib.CONTEXT, schema_lib.PAIR)


def split_by_side(features: Sequence[schema_lib.Feature]
                  ) -> Tuple[List[schema_lib.Feature], List[schema_lib.Feature]]:
  """(user-side, item-side) features: user, context and pair features go to the user tower."""
  user = [f for f in features if f.entity in USER_SIDE]
  item = [f for f in features if f.entity == schema_lib.ITEM]
  return user, item


class EmbeddedHead(tf.keras.layers.Layer):
  """A head whose inputs are the features of one `FeatureEmbedding`, `self.embedding`."""

  embedding: inputs_lib.FeatureEmbedding

  @property
  def input_features(self) -> List[schema_lib.Feature]:
    return list(self.embedding.features)

  @property
  def input_names(self) -> List[str]:
    return self.embedding.input_names


class DNNRanker(EmbeddedHead):
  """MLP over the concatenated embeddings of `features`, ending in one logit.

  Args:
    features: the schema features the ranker reads.
    bank: EmbeddingBank holding the (possibly shared) tables.
    widths: MLP widths, (512, 256, 128) in the paper.
    private_bank: tables this ranker does not share (see `FeatureEmbedding`).
    sequence_pooling: 'mean' or 'attention' (target attention with the candidate item).
    batch_norm, dropout: as in `towers.MLP`.
    numeric_log1p: also feed log1p of numeric values next to their bucket embeddings.
  """

  architecture = DNN

  def __init__(self, features: Sequence[schema_lib.Feature], bank: inputs_lib.EmbeddingBank,
               widths: Sequence[int] = towers.DEFAULT_WIDTHS,
               private_bank: Optional[inputs_lib.EmbeddingBank] = None,
               sequence_pooling: str = "mean", batch_norm: bool = True, dropout: float = 0.0,
               numeric_log1p: bool = False, **kwargs: Any) -> None:
    super().__init__(**kwargs)
    self.embedding = inputs_lib.FeatureEmbedding(
        features, bank, private_bank, sequence_pooling, numeric_log1p, name="embedding")
    self.mlp = towers.MLP(widths, batch_norm, dropout, name="mlp")
    self.logit = tf.keras.layers.Dense(1, name="logit")
    self.widths = tuple(widths)

  def call(self, batch: Dict[str, tf.Tensor], training: Optional[bool] = None,
           cache: Optional[inputs_lib.Cache] = None) -> tf.Tensor:
    """Logits [B]; `cache` shares embedding lookups between heads (see FeatureEmbedding)."""
    hidden = self.mlp(self.embedding(batch, training=training, cache=cache), training=training)
    return tf.squeeze(self.logit(hidden), axis=-1)

  @property
  def per_request_features(self) -> List[schema_lib.Feature]:
    """Inputs that are the same for every candidate of a request: user and context features
    (a sequence pooled by target attention depends on the candidate, so it is not one)."""
    return [f for f in self.input_features if f.entity in (schema_lib.USER, schema_lib.CONTEXT)
            and not (f.kind == schema_lib.SEQUENCE
                     and self.embedding.sequence_pooling == "attention")]

  def candidate_logits(self, batch: Dict[str, tf.Tensor],
                       training: Optional[bool] = None) -> tf.Tensor:
    """Logits [n, m] of m candidates per request, equal to `call` on the flattened rows.

    `batch` holds the per-request features with n rows and every other (item, pair) feature as
    [n, m]. The per-request features are embedded and pushed through the first layer once per
    request instead of once per candidate: the first Dense layer is linear, so its kernel splits
    into request rows and candidate rows. This is how a fine ranker scores a page's candidates.
    """
    inputs_lib.check_batch(batch, self.input_names, self.name)
    per_request = self.per_request_features
    request_names = {f.name for f in per_request}
    per_candidate = [f for f in self.input_features if f.name not in request_names]
    shape = tf.shape(batch[next(f.name for f in per_candidate if f.entity != schema_lib.USER)])
    n, m = shape[0], shape[1]
    flat = {}
    for f in per_candidate:
      value = tf.convert_to_tensor(batch[f.name])
      flat[f.name] = (tf.repeat(value, m, axis=0) if f.entity == schema_lib.USER
                      else tf.reshape(value, [-1]))
    dense = self.mlp.first_dense
    rows = self._kernel_rows()
    first = tf.reshape(self._project(flat, per_candidate, rows, dense), [n, m, -1])
    if per_request:
      first += self._project(batch, per_request, rows, dense)[:, None, :]
    if dense.use_bias:
      first = tf.nn.bias_add(first, dense.bias)
    hidden = self.mlp.after_first_dense(tf.reshape(first, [n * m, -1]), training=training)
    return tf.reshape(self.logit(hidden), [n, m])

  def _kernel_rows(self) -> Dict[str, List[int]]:
    """Feature name -> the rows of the first Dense kernel its embedding slice multiplies."""
    rows, start = {}, 0
    for name, width in self.embedding.part_widths().items():
      rows[name] = list(range(start, start + width))
      start += width
    return rows

  def _project(self, batch: Dict[str, tf.Tensor], features: Sequence[schema_lib.Feature],
               rows: Dict[str, List[int]], dense: tf.keras.layers.Dense) -> tf.Tensor:
    """The first Dense layer's share (no bias) from `features` alone."""
    embedded = tf.concat(self.embedding.parts(batch, features), axis=-1)
    kernel = tf.gather(dense.kernel, [r for f in features for r in rows[f.name]])
    return tf.matmul(embedded, kernel)


class TwoTowerScorer(tf.keras.layers.Layer):
  """Inner-product model: logit = scale * <user_tower(u), item_tower(i)>, both unit length.

  Args:
    user_features: user, context (and, for the PFD-only coarse teacher, pair) features.
    item_features: item features.
    bank: EmbeddingBank holding the (possibly shared) tables.
    widths: tower widths; the last one is the vector dimension.
    scale: multiplies the cosine to make the logit (5 in the paper).
    private_bank, batch_norm, dropout, numeric_log1p: as in `DNNRanker`.
  Sequences are mean-pooled: target attention would need the item on the user side.
  """

  architecture = TWO_TOWER

  def __init__(self, user_features: Sequence[schema_lib.Feature],
               item_features: Sequence[schema_lib.Feature], bank: inputs_lib.EmbeddingBank,
               widths: Sequence[int] = towers.DEFAULT_WIDTHS, scale: float = 5.0,
               private_bank: Optional[inputs_lib.EmbeddingBank] = None,
               batch_norm: bool = True, dropout: float = 0.0, numeric_log1p: bool = False,
               **kwargs: Any) -> None:
    super().__init__(**kwargs)
    wrong = [f.name for f in item_features if f.entity != schema_lib.ITEM]
    wrong += [f.name for f in user_features if f.entity not in USER_SIDE]
    if wrong:
      raise ValueError(f"features on the wrong side of the two-tower model: {wrong}")
    common: Dict[str, Any] = dict(private_bank=private_bank, sequence_pooling="mean",
                                  numeric_log1p=numeric_log1p)
    self.user_embedding = inputs_lib.FeatureEmbedding(
        user_features, bank, name="user_embedding", **common)
    self.item_embedding = inputs_lib.FeatureEmbedding(
        item_features, bank, name="item_embedding", **common)
    self.user_tower = towers.Tower(widths, batch_norm, dropout, name="user_tower")
    self.item_tower = towers.Tower(widths, batch_norm, dropout, name="item_tower")
    self.scale = float(scale)
    self.widths = tuple(widths)

  @property
  def input_features(self) -> List[schema_lib.Feature]:
    return list(self.user_embedding.features) + list(self.item_embedding.features)

  @property
  def input_names(self) -> List[str]:
    return [f.name for f in self.input_features]

  @property
  def user_input_names(self) -> List[str]:
    return self.user_embedding.input_names

  @property
  def item_input_names(self) -> List[str]:
    return self.item_embedding.input_names

  def user_vectors(self, batch: Dict[str, tf.Tensor], training: Optional[bool] = None,
                   cache: Optional[inputs_lib.Cache] = None) -> tf.Tensor:
    """[B, d] unit vectors from the user-side features of `batch`."""
    embedded = self.user_embedding(batch, training=training, cache=cache)
    return self.user_tower(embedded, training=training)

  def item_vectors(self, batch: Dict[str, tf.Tensor], training: Optional[bool] = None,
                   cache: Optional[inputs_lib.Cache] = None) -> tf.Tensor:
    """[B, d] unit vectors from the item-side features of `batch` (e.g. the whole corpus)."""
    embedded = self.item_embedding(batch, training=training, cache=cache)
    return self.item_tower(embedded, training=training)

  def call(self, batch: Dict[str, tf.Tensor], training: Optional[bool] = None,
           cache: Optional[inputs_lib.Cache] = None) -> tf.Tensor:
    """Logits [B]; `cache` shares embedding lookups between heads (see FeatureEmbedding)."""
    users = self.user_vectors(batch, training=training, cache=cache)
    items = self.item_vectors(batch, training=training, cache=cache)
    return self.scale * tf.reduce_sum(users * items, axis=-1)
