"""Optimizers whose embedding-table updates cost what a batch touched, not what a table holds.

A table's gradient is a `tf.IndexedSlices` (the rows a batch gathered). Keras's Adam applies
it densely: every step it decays both moments of the *whole* table and rewrites every row,
so its cost grows with the vocabulary, not with the batch. `RowwiseAdam` is Adam for dense
weights and lazy (row-wise) Adam for tables: only the rows the batch touched have their
moments and weights updated, with Adam's global bias correction. A row that no batch touches
keeps its moments (they do not decay meanwhile), which is the usual "lazy Adam" of
recommender systems. Keras's base optimizer has already summed duplicate rows
(`tf.unique` + `unsorted_segment_sum`) once before `update_step`, so each row is updated once.

Keras's Adagrad already updates a table row-wise (scatter on the accumulator and the rows), so
'adagrad' stays Keras's own.

`make_optimizer(name, learning_rate)` is the one constructor the training loop calls.
"""

from typing import Any

import tensorflow as tf

ADAM, ADAGRAD = "adam", "adagrad"
DENSE_ADAM = "dense_adam"
OPTIMIZERS = (ADAM, ADAGRAD, DENSE_ADAM)


class RowwiseAdam(tf.keras.optimizers.Adam):
  """Adam for dense gradients; lazy, row-wise Adam for sparse (embedding-table) gradients.

  Takes the arguments of `tf.keras.optimizers.Adam` except `amsgrad`.
  """

  def __init__(self, learning_rate: float = 0.001, **kwargs: Any) -> None:
    if kwargs.get("amsgrad"):
      raise ValueError("RowwiseAdam does not implement amsgrad")
    kwargs.setdefault("name", "RowwiseAdam")
    super().__init__(learning_rate=learning_rate, **kwargs)

  def update_step(self, gradient: Any, variable: tf.Variable) -> Any:  # as Keras's: None
    if not isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable)
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    beta_2_power = tf.pow(beta_2, step)
    alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - beta_2_power)
             / (1 - tf.pow(beta_1, step)))
    epsilon = self.epsilon
    if self.adaptive_epsilon:
      epsilon = epsilon * tf.sqrt(1 - beta_2_power)
    index = self._index_dict[self._var_key(variable)]
    m, v = self._momentums[index], self._velocities[index]
    rows, values = gradient.indices, gradient.values
    m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
    v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
    m.scatter_update(tf.IndexedSlices(m_rows, rows))
    v.scatter_update(tf.IndexedSlices(v_rows, rows))
    variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))


def make_optimizer(name: str, learning_rate: float,
                   rowwise_tables: bool = True) -> tf.keras.optimizers.Optimizer:
  """The training optimizer: 'adam' (row-wise for tables), 'adagrad' or 'dense_adam'.

  'dense_adam' (or `rowwise_tables=False`) is Keras's Adam, which updates every row of a table
  each step: what the project trained with before row-wise Adam, kept for comparisons.
  """
  if name == DENSE_ADAM:
    return tf.keras.optimizers.Adam(learning_rate)
  if name == ADAGRAD:
    return tf.keras.optimizers.Adagrad(learning_rate)
  if name == ADAM:
    return (RowwiseAdam(learning_rate) if rowwise_tables
            else tf.keras.optimizers.Adam(learning_rate))
  raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
