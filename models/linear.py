"""A logistic regression over a stage's own serving inputs: the linear reference.

A deep model should beat a linear one on the same inputs; if it does not, it is undertrained
or overfitting, and its PFD deltas describe the optimiser rather than the information in the
features. `LinearRanker` gives every id (and numeric bucket) one weight, averages the weights
of a behaviour sequence's valid ids, and adds a bias: the classic one-hot logistic regression
of CTR prediction. It has the ranker contract of `models.rankers` (`input_features`,
`architecture`, `call -> logits [B]`, `candidate_logits`), so it trains, evaluates and
exports like any student.
"""

from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf

from data.world import schema as schema_lib
from models import inputs as inputs_lib
from models import rankers

LINEAR = "linear"


class LinearRanker(rankers.EmbeddedHead):
  """bias + sum over features of the feature's weight (a sequence: mean of its ids' weights).

  Args:
    features: the schema features it reads (a stage's serving features).
  Its weights live in a private one-wide EmbeddingBank, shared with nothing.
  """

  architecture = LINEAR

  def __init__(self, features: Sequence[schema_lib.Feature], **kwargs: Any) -> None:
    super().__init__(**kwargs)
    self.bank = inputs_lib.EmbeddingBank(1, initializer_stddev=0.0, name="weights")
    self.embedding = inputs_lib.FeatureEmbedding(features, self.bank, sequence_pooling="mean",
                                                 name="embedding")
    self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")

  def call(self, batch: Dict[str, tf.Tensor], training: Optional[bool] = None,
           cache: Optional[inputs_lib.Cache] = None) -> tf.Tensor:
    """Logits [B]."""
    return tf.reduce_sum(self.embedding(batch, training=training), axis=-1) + self.bias

  @property
  def per_request_features(self) -> List[schema_lib.Feature]:
    return [f for f in self.input_features if f.entity in (schema_lib.USER, schema_lib.CONTEXT)]

  def candidate_logits(self, batch: Dict[str, tf.Tensor],
                       training: Optional[bool] = None) -> tf.Tensor:
    """Logits [n, m] of m candidates per request (request features [n], others [n, m])."""
    inputs_lib.check_batch(batch, self.input_names, self.name)
    request = self.per_request_features
    request_names = {f.name for f in request}
    candidate = [f for f in self.input_features if f.name not in request_names]
    shape = tf.shape(batch[candidate[0].name])
    flat = {f.name: tf.reshape(batch[f.name], [-1]) for f in candidate}
    logits = tf.reshape(tf.reduce_sum(tf.concat(self.embedding.parts(flat, candidate), -1), -1),
                        shape[:2])
    if request:
      logits += tf.reduce_sum(tf.concat(self.embedding.parts(batch, request), -1), -1)[:, None]
    return logits + self.bias
