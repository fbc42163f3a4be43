"""Ground truth of the simulated world: the true click and conversion probabilities.

The same functions drive the generator (world.py draws every logged click and conversion from
them) and the `Oracle` (which evaluates them for any (request, item) pair, logged or not), so
the replay's "simulated online" outcomes are exactly the probabilities the logs came from.

Click model (per impression of item i to user u at request r, position p):
  logit = CLICK_BIAS + TASTE_WEIGHT * <taste_u, taste_i>
          + intent_strength * [category_i == intent_category_r]
          + intent_shop_strength * [shop_i == intent_shop_r]
          + revisit_strength * log1p(views of i by u in the 7 days strictly before t_r)
          + quality_i - price_sensitivity_u * (log price_i - LOG_PRICE_CENTER)
  P(click) = sigmoid(logit) / (1 + p) ** position_bias          (examination model)

Conversion model (after a click): a latent purchase propensity
  z = conversion_mean(u, i, r) + CONVERSION_SIGMA * eps,  eps ~ N(0, 1) per click,
  P(conversion | z) = sigmoid(z),  so  P(conversion | click) = E_eps[sigmoid(z)],
computed here with Gauss-Hermite quadrature. The post-click signals (world.py) are noisy
functions of the same z, which is why they are informative privileged features.
"""

from typing import Optional

import numpy as np

from data import ids as id_lookup
from data import truth as ground_truth
from data.numeric import sigmoid

# Click model constants (hidden; part of the world's definition, versioned by FORMAT_VERSION
# in io.py).
CLICK_BIAS = -4.3
TASTE_WEIGHT = 2.0
LOG_PRICE_CENTER = float(np.log(60.0))

# Conversion model constants.
CONVERSION_BIAS = -4.5
CONVERSION_TASTE_WEIGHT = 1.0
CONVERSION_QUALITY_WEIGHT = 0.8
CONVERSION_PRICE_BASE = 0.4        # everybody converts less on expensive items ...
CONVERSION_INTENT_WEIGHT = 0.6     # ... and more on what they came for.
CONVERSION_INTENT_SHOP_WEIGHT = 0.4
CONVERSION_SIGMA = 1.5

_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite.hermgauss(24)


def click_logit(config, taste_dot, same_category, same_shop, views_7d, quality, log_price,
                price_sensitivity) -> np.ndarray:
  """The true click logit at position 0 (all inputs broadcast together)."""
  return (CLICK_BIAS + TASTE_WEIGHT * taste_dot
          + config.intent_strength * same_category
          + config.intent_shop_strength * same_shop
          + config.revisit_strength * np.log1p(views_7d)
          + quality - price_sensitivity * (log_price - LOG_PRICE_CENTER))


def examination(config, positions) -> np.ndarray:
  """P(the user examines position p) = 1 / (1 + p) ** position_bias."""
  return 1.0 / (1.0 + np.asarray(positions, dtype=np.float64)) ** config.position_bias


def conversion_mean(taste_dot, same_category, same_shop, quality, log_price,
                    price_sensitivity) -> np.ndarray:
  """Mean of the latent purchase propensity z of a click (before the per-click noise)."""
  return (CONVERSION_BIAS + CONVERSION_TASTE_WEIGHT * taste_dot
          + CONVERSION_QUALITY_WEIGHT * quality
          - (CONVERSION_PRICE_BASE + price_sensitivity) * (log_price - LOG_PRICE_CENTER)
          + CONVERSION_INTENT_WEIGHT * same_category
          + CONVERSION_INTENT_SHOP_WEIGHT * same_shop)


def expected_sigmoid(mean: np.ndarray, sigma: float = CONVERSION_SIGMA) -> np.ndarray:
  """E[sigmoid(mean + sigma * eps)], eps ~ N(0, 1), by 24-point Gauss-Hermite quadrature."""
  mean = np.asarray(mean, dtype=np.float64)
  total = np.zeros_like(mean)
  for node, weight in zip(_HERMITE_NODES, _HERMITE_WEIGHTS):
    total += weight * sigmoid(mean + sigma * np.sqrt(2.0) * node)
  return total / np.sqrt(np.pi)


class Oracle:
  """True P(click) and P(conversion | click) for any (request, item) pairs of a world.

  Built by `data.load(...)` (World.oracle). `request_ids` must be requests of the world (the
  oracle needs their user, time and hidden intent); `item_ids` may be any items.
  """

  def __init__(self, config, entities, request_truth, features):
    """entities: world.Entities; request_truth: dict of sorted request_id, user_id, timestamp,
    intent_category, intent_shop; features: features.FeatureService (for the 7-day views)."""
    self.config = config
    self._entities = entities
    self._requests = request_truth
    self._features = features

  def _pairs(self, request_ids, item_ids):
    request_ids = np.asarray(request_ids, dtype=np.int64).reshape(-1)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    squeeze = item_ids.ndim == 1
    if squeeze:
      item_ids = item_ids[:, None]
    if item_ids.shape[0] != request_ids.shape[0]:
      raise ValueError(f"item_ids has {item_ids.shape[0]} rows, request_ids has "
                       f"{request_ids.shape[0]}; expected item_ids of shape [n, k]")
    if item_ids.size and (item_ids.min() < 0 or item_ids.max() >= self.config.n_items):
      raise ValueError(f"item_ids must lie in [0, {self.config.n_items})")
    rows = id_lookup.lookup_rows(self._requests["request_id"], request_ids)
    return rows, item_ids, squeeze

  def _terms(self, rows, item_ids):
    """The per-pair inputs shared by the click and conversion models (data.truth)."""
    r = self._requests
    return ground_truth.pair_terms(self._entities, r["user_id"][rows], item_ids,
                            r["intent_category"][rows], r["intent_shop"][rows])

  def click_logit(self, request_ids, item_ids) -> np.ndarray:
    """True click logit at position 0, float64[n, k]."""
    rows, item_ids, squeeze = self._pairs(request_ids, item_ids)
    terms = self._terms(rows, item_ids)
    r = self._requests
    views = self._features.views_7d(np.repeat(r["user_id"][rows], item_ids.shape[1]),
                                    item_ids.reshape(-1),
                                    np.repeat(r["timestamp"][rows], item_ids.shape[1]))
    logit = click_logit(self.config, views_7d=views.reshape(item_ids.shape), **terms)
    return logit[:, 0] if squeeze else logit

  def p_click(self, request_ids, item_ids, positions: Optional[np.ndarray] = None):
    """P(click), float64[n, k]; positions int[k] or int[n, k], None means position 0."""
    p = sigmoid(self.click_logit(request_ids, item_ids))
    if positions is not None:
      p = p * examination(self.config, positions)
    return p

  def conversion_mean(self, request_ids, item_ids) -> np.ndarray:
    """Mean latent purchase propensity of a click, float64[n, k]."""
    rows, item_ids, squeeze = self._pairs(request_ids, item_ids)
    mean = conversion_mean(**self._terms(rows, item_ids))
    return mean[:, 0] if squeeze else mean

  def p_convert(self, request_ids, item_ids) -> np.ndarray:
    """P(conversion | click), float64[n, k]."""
    return expected_sigmoid(self.conversion_mean(request_ids, item_ids))

  def expected_outcomes(self, request_ids, item_ids, positions=None):
    """Expected clicks, conversions and GMV per shown item: dict of float64[n, k]."""
    p_click = self.p_click(request_ids, item_ids, positions)
    p_conversion = p_click * self.p_convert(request_ids, item_ids)
    price = self._entities.item_price[np.asarray(item_ids, dtype=np.int64)].astype(np.float64)
    return {"click": p_click, "conversion": p_conversion, "gmv": p_conversion * price}

