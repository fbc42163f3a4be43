"""Dense building blocks: the paper's MLP and the L2-normalised tower of a two-tower model.

The paper's networks are stacks of Dense + batch norm + LeakyReLU blocks (512-256-128). A
two-tower model ends each tower in a linear projection normalised to unit length, so the score
is a scaled cosine and item vectors can be precomputed for the whole corpus.
"""

from typing import Any, Optional, Sequence

import tensorflow as tf

from models import distribute

DEFAULT_WIDTHS = (512, 256, 128)


class MLP(tf.keras.layers.Layer):
  """Dense -> BatchNorm -> LeakyReLU blocks, one per entry of `widths`.

  Args:
    widths: units of each block, e.g. (512, 256, 128).
    batch_norm: put batch normalisation between each Dense and its activation.
    dropout: dropout rate after each block (0 disables it).
    leaky_alpha: negative slope of the LeakyReLU.
  """

  def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS, batch_norm: bool = True,
               dropout: float = 0.0, leaky_alpha: float = 0.2, **kwargs: Any) -> None:
    super().__init__(**kwargs)
    if not widths or any(int(w) <= 0 for w in widths):
      raise ValueError(f"widths must be positive integers, got {tuple(widths)}")
    self.widths = tuple(int(w) for w in widths)
    self.blocks = []
    for i, width in enumerate(self.widths):
      block = [tf.keras.layers.Dense(width, use_bias=not batch_norm, name=f"dense_{i}")]
      if batch_norm:
        # Over the global batch when several replicas train it synchronously.
        block.append(tf.keras.layers.BatchNormalization(
            name=f"batch_norm_{i}", synchronized=distribute.synchronous_replicas() > 1))
      block.append(tf.keras.layers.LeakyReLU(alpha=leaky_alpha, name=f"leaky_relu_{i}"))
      if dropout > 0:
        block.append(tf.keras.layers.Dropout(dropout, name=f"dropout_{i}"))
      self.blocks.append(block)

  def call(self, x: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
    return self.after_first_dense(self.first_dense(x), training=training)

  @property
  def first_dense(self) -> tf.keras.layers.Dense:
    return self.blocks[0][0]

  def after_first_dense(self, x: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
    """The MLP's output given its first Dense layer's output `x` (however that was computed)."""
    for i, block in enumerate(self.blocks):
      for layer in block[1:] if i == 0 else block:
        x = layer(x, training=training)
    return x


class Tower(tf.keras.layers.Layer):
  """One side of a two-tower model: MLP over all but the last width, a linear projection to the
  last width, then L2 normalisation.

  Args:
    widths: e.g. (512, 256, 128) gives blocks of 512 and 256 and a 128-d unit vector.
    batch_norm, dropout: as in `MLP`.
  """

  def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS, batch_norm: bool = True,
               dropout: float = 0.0, **kwargs: Any) -> None:
    super().__init__(**kwargs)
    widths = tuple(int(w) for w in widths)
    if not widths:
      raise ValueError("a Tower needs at least one width")
    self.hidden = MLP(widths[:-1], batch_norm, dropout, name="mlp") if len(widths) > 1 else None
    self.projection = tf.keras.layers.Dense(widths[-1], name="projection")

  def call(self, x: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
    if self.hidden is not None:
      x = self.hidden(x, training=training)
    return tf.math.l2_normalize(self.projection(x), axis=-1)
