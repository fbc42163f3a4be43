"""Synthetic, schema-shaped impression logs with a planted privileged signal, for tests.

Rows look exactly like `world.log_arrays(days)`: every schema feature plus `click`,
`conversion` and `gmv`. The click logit is a serving part (the user's taste for the item's
category, which the behaviour sequence reveals, plus a per-item quality) plus a hidden
short-term intent that only the privileged cross features reveal; conversion of a click depends
on a hidden purchase propensity that the post-click features reveal. So a teacher that sees the
privileged features is clearly better than any student, as in the paper's world.
"""

from typing import Any, Dict, List, Optional

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from data.world import config as config_lib
from data.world import schema as schema_lib
from data.world.numeric import sigmoid


def tiny_schema(history_len: int = 8, **overrides: Any) -> schema_lib.Schema:
  """The schema of the 'tiny' preset, with a short history for fast tests."""
  return schema_lib.build_schema(config_lib.preset("tiny", history_len=history_len, **overrides))


def _sizes(schema: schema_lib.Schema) -> Dict[str, int]:
  return {"users": schema["user_id"].vocab_size, "items": schema["item_id"].vocab_size,
          "categories": schema["item_category"].vocab_size,
          "shops": schema["item_shop"].vocab_size, "brands": schema["item_brand"].vocab_size,
          "history": schema["hist_item_ids"].length}


def _history(rng: np.random.Generator, users: np.ndarray, taste: np.ndarray, n: int,
             s: Dict[str, int], length: int) -> Dict[str, np.ndarray]:
  """Behaviour sequences: mostly items of the user's favourite category, most recent first."""
  hist_len = rng.integers(0, length + 1, size=n)
  favourite = rng.random((n, length)) < 0.7
  cats = np.where(favourite, taste[users][:, None], rng.integers(0, s["categories"], (n, length)))
  items = cats + s["categories"] * rng.integers(0, s["items"] // s["categories"], (n, length))
  valid = np.arange(length)[None, :] < hist_len[:, None]
  pad = schema_lib.PAD_ID
  return {"hist_item_ids": np.where(valid, items, pad),
          "hist_category_ids": np.where(valid, cats, pad),
          "hist_shop_ids": np.where(valid, items % s["shops"], pad),
          "hist_len": hist_len.astype(np.float32)}


def synthetic_log_arrays(schema: schema_lib.Schema, n_rows: int, seed: int = 0,
                         privileged_strength: float = 2.0, serving_strength: float = 1.5,
                         unlabelled_fraction: float = 0.0) -> Dict[str, np.ndarray]:
  """`n_rows` impressions with every schema column and the labels.

  Args:
    schema: the world's schema (sizes and history length are read from it).
    privileged_strength: weight of the hidden intent (revealed by the cross features) in the
      click logit, and of the purchase propensity (revealed post-click) in conversion.
    serving_strength: weight of the serving-visible taste match and item quality.
    unlabelled_fraction: share of rows whose labels are -1 (retrieved but not shown).
  The world itself (tastes, qualities) depends only on the schema sizes, so two calls with
  different seeds draw different impressions from the same world.
  """
  s = _sizes(schema)
  world = np.random.default_rng(12345)
  taste = world.integers(0, s["categories"], s["users"])
  quality = world.normal(0.0, 1.0, s["items"])
  price = np.exp(world.normal(3.5, 1.0, s["items"])).astype(np.float32)
  rng = np.random.default_rng(seed)
  n = n_rows
  users = rng.integers(0, s["users"], n)
  items = rng.integers(0, s["items"], n)
  category = items % s["categories"]
  arrays: Dict[str, Any] = {
      "user_id": users, "user_age_bucket": users % 7, "user_gender": users % 2,
      "user_power_level": users % 5, "context_hour": rng.integers(0, 24, n),
      "item_id": items, "item_category": category, "item_shop": items % s["shops"],
      "item_brand": items % s["brands"], "item_price": price[items],
  }
  arrays.update(_history(rng, users, taste, n, s, s["history"]))
  intent = rng.normal(0.0, 1.0, n)
  match = (category == taste[users]).astype(np.float64)
  click_logit = serving_strength * (1.5 * match + 0.7 * quality[items]) \
      + privileged_strength * intent - 2.0
  click = (rng.random(n) < sigmoid(click_logit)).astype(np.float32)
  arrays.update(_cross_features(rng, intent, match, n))
  arrays.update(_post_click(rng, click, price[items], privileged_strength, arrays))
  if unlabelled_fraction > 0:
    hidden = rng.random(n) < unlabelled_fraction
    for label in ("click", "conversion", "gmv"):
      arrays[label] = np.where(hidden, schema_lib.UNLABELLED, arrays[label]).astype(np.float32)
  return {k: np.asarray(v, dtype=_dtype(schema, k)) for k, v in arrays.items()}


def _cross_features(rng: np.random.Generator, intent: np.ndarray, match: np.ndarray,
                    n: int) -> Dict[str, np.ndarray]:
  rate = np.exp(1.2 * intent + 0.5 * match)
  return {"cross_clicks_cate_24h": rng.poisson(rate).astype(np.float32),
          "cross_clicks_shop_24h": rng.poisson(0.5 * rate).astype(np.float32),
          "cross_clicks_brand_24h": rng.poisson(0.3 * rate).astype(np.float32),
          "cross_views_item_7d": rng.poisson(0.5, n).astype(np.float32)}


def _post_click(rng: np.random.Generator, click: np.ndarray, price: np.ndarray, strength: float,
                arrays: Dict[str, Any]) -> Dict[str, np.ndarray]:
  n = len(click)
  propensity = rng.normal(0.0, 1.0, n)
  clicked = click > 0
  convert_logit = strength * propensity - 0.4 * np.log(price) + 0.3
  conversion = (clicked & (rng.random(n) < sigmoid(convert_logit))).astype(np.float32)
  dwell = np.exp(3.0 + 0.8 * propensity + 0.3 * np.log(price) + rng.normal(0, 0.3, n))
  cart = rng.random(n) < sigmoid(2.0 * propensity - 1.0)
  return {"click": click, "conversion": conversion, "gmv": conversion * price,
          "dwell_seconds": np.where(clicked, dwell, 0.0).astype(np.float32),
          "read_comments": (clicked & (rng.random(n) < sigmoid(propensity))).astype(np.int64),
          "chatted_with_seller": (clicked & (rng.random(n) < 0.1)).astype(np.int64),
          "added_to_cart": (clicked & cart).astype(np.int64),
          "favorited": (clicked & (rng.random(n) < sigmoid(propensity - 1.0))).astype(np.int64)}


def _dtype(schema: schema_lib.Schema, name: str) -> npt.DTypeLike:
  return schema[name].dtype if name in schema.names else np.float32


def as_batch(arrays: Dict[str, np.ndarray], rows: Optional[int] = None) -> Dict[str, tf.Tensor]:
  """The first `rows` rows of `arrays` as a dict of tensors (one batch)."""
  return {k: tf.convert_to_tensor(v[:rows] if rows else v) for k, v in arrays.items()}


def privileged_columns(schema: schema_lib.Schema, stage: str) -> List[str]:
  """Names of the columns only a teacher at `stage` may read."""
  return [f.name for f in schema.privileged_features(stage)]


class Killed(Exception):
  """Raised by `KillAtStep`: a simulated kill of a training run."""


class KillAtStep(tf.keras.callbacks.Callback):
  """Raises `Killed` after the optimizer's `step`-th update, as a kill would interrupt the run."""

  def __init__(self, step: int) -> None:
    super().__init__()
    self.step = step

  def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
    if int(self.model.optimizer.iterations.numpy()) == self.step:
      raise Killed()


class CountSteps(tf.keras.callbacks.Callback):
  """Counts the training steps a run makes (a resumed run makes only the remaining ones)."""

  def __init__(self) -> None:
    super().__init__()
    self.steps = 0

  def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
    self.steps += 1
