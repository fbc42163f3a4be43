"""Ground truth of the simulated world: the true click and conversion probabilities.

The same functions drive the generator (world.py draws every logged click and conversion from
them) and the `Oracle` (which evaluates them for any (request, item) pair, logged or not), so
the replay's "simulated online" outcomes are exactly the probabilities the logs came from.

Click model (per impression of item i to user u at request r, position p):
  logit = click_bias + TASTE_WEIGHT * <taste_u, taste_i>
          + intent_strength * [category_i == intent_category_r]
          + intent_shop_strength * [shop_i == intent_shop_r]
          + revisit_strength * log1p(views of i by u in the 7 days strictly before t_r)
          + quality_i - price_sensitivity_u * (log price_i - LOG_PRICE_CENTER)
  P(click) = sigmoid(logit) / (1 + p) ** position_bias          (examination model)

(`click_bias`, `conversion_bias` and the purchase intent's knobs are WorldConfig fields.)

Conversion model (after a click): a latent purchase propensity
  z = conversion_mean(u, i, r) + CONVERSION_SIGMA * eps,  eps ~ N(0, 1) per click,
  conversion_mean = conversion_bias + <observable and hidden terms of u, i, r>
                    + purchase_intent_sd * a_r,
  P(conversion | z) = sigmoid(z),  so  P(conversion | click) = E_eps[sigmoid(z)],
computed here with Gauss-Hermite quadrature. a_r is the request's purchase intent (standard
normal; `purchase_intent`): sqrt(share) * b_u, a persistent trait of the user, plus
sqrt(1 - share) * c_r, fresh per request. Like the intent category it is hidden truth of
the request, so the oracle uses it: P(conversion | click) is exact for the request, and
`Oracle.conversion_mean` (the CVR ceiling's score) is everything except the per-click eps.
The post-click signals (world.py) are noisy functions of the same z, which is why they are
informative privileged features; through a_r they also reveal the request's and the user's
intent, which lasts beyond the click.

a_r needs no file: it is a counter-based draw, a hash of (seed, request id) and of (seed,
user id), so the generator and the oracle compute the same value for any subset of requests.
"""

from typing import TYPE_CHECKING, Dict, Optional, Tuple, cast

import numpy as np
import numpy.typing as npt

from data.world import ids as id_lookup
from data.world import truth as ground_truth
from data.world.config import DENSE_KNOBS
from data.world.config import WorldConfig
from data.world.numeric import sigmoid as sigmoid  # part of the oracle's interface

if TYPE_CHECKING:  # both import this module
  from data.world.features import FeatureService
  from data.world.simulation import Entities

# Click model constants (hidden; part of the world's definition, versioned by FORMAT_VERSION
# in io.py).
TASTE_WEIGHT = 2.0
LOG_PRICE_CENTER = float(np.log(60.0))

# Conversion model constants.
# The dense world's conversion_bias: the post-click signals' centre is defined at it and moves
# with the world's own (world.signal_center); config.conversion_bias is the truth.
CONVERSION_BIAS = DENSE_KNOBS["conversion_bias"]
CONVERSION_TASTE_WEIGHT = 1.0
CONVERSION_QUALITY_WEIGHT = 0.8
CONVERSION_PRICE_BASE = 0.4        # everybody converts less on expensive items ...
CONVERSION_INTENT_WEIGHT = 0.6     # ... and more on what they came for.
CONVERSION_INTENT_SHOP_WEIGHT = 0.4
CONVERSION_SIGMA = 1.5

_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite.hermgauss(24)

# Purposes of the counter-based (hashed) draws.
_USER_PURCHASE_TRAIT, _REQUEST_PURCHASE_INTENT = 1, 2


def click_logit(config: WorldConfig, taste_dot: np.ndarray, same_category: np.ndarray,
                same_shop: np.ndarray, views_7d: npt.ArrayLike, quality: np.ndarray,
                log_price: np.ndarray, price_sensitivity: np.ndarray) -> np.ndarray:
  """The true click logit at position 0 (all inputs broadcast together)."""
  return cast(np.ndarray, config.click_bias + TASTE_WEIGHT * taste_dot
          + config.intent_strength * same_category
          + config.intent_shop_strength * same_shop
          + config.revisit_strength * np.log1p(views_7d)
          + quality - price_sensitivity * (log_price - LOG_PRICE_CENTER))


def examination(config: WorldConfig, positions: npt.ArrayLike) -> np.ndarray:
  """P(the user examines position p) = 1 / (1 + p) ** position_bias."""
  return cast(np.ndarray,
              1.0 / (1.0 + np.asarray(positions, dtype=np.float64)) ** config.position_bias)


def conversion_mean(taste_dot: np.ndarray, same_category: np.ndarray, same_shop: np.ndarray,
                    quality: np.ndarray, log_price: np.ndarray,
                    price_sensitivity: np.ndarray, bias: float = CONVERSION_BIAS,
                    purchase_intent: Optional[np.ndarray] = None) -> np.ndarray:
  """Mean of the latent purchase propensity z of a click (before the per-click noise).

  bias: the world's `conversion_bias`; purchase_intent: purchase_intent_sd * a_r per click
  (broadcast with the other inputs), None when the world has none.
  """
  mean = (bias + CONVERSION_TASTE_WEIGHT * taste_dot
          + CONVERSION_QUALITY_WEIGHT * quality
          - (CONVERSION_PRICE_BASE + price_sensitivity) * (log_price - LOG_PRICE_CENTER)
          + CONVERSION_INTENT_WEIGHT * same_category
          + CONVERSION_INTENT_SHOP_WEIGHT * same_shop)
  return cast(np.ndarray, mean if purchase_intent is None else mean + purchase_intent)


def purchase_intent(config: WorldConfig, request_ids: npt.ArrayLike,
                    user_ids: npt.ArrayLike) -> Optional[np.ndarray]:
  """purchase_intent_sd * a_r per request (float64), or None if the world has no such intent.

  a_r = sqrt(share) * b_u + sqrt(1 - share) * c_r with b_u, c_r independent standard
  normals: b_u a hash of (seed, user id), c_r of (seed, request id).
  """
  if config.purchase_intent_sd == 0:
    return None
  share = config.purchase_intent_user_share
  trait = hashed_normals(config.seed, _USER_PURCHASE_TRAIT, user_ids)
  fresh = hashed_normals(config.seed, _REQUEST_PURCHASE_INTENT, request_ids)
  return cast(np.ndarray,
              config.purchase_intent_sd * (np.sqrt(share) * trait + np.sqrt(1.0 - share) * fresh))


def hashed_normals(seed: int, purpose: int, keys: npt.ArrayLike) -> np.ndarray:
  """Standard normals indexed by integer keys: a key always gets the same draw.

  Box-Muller on two uniforms from the splitmix64 finaliser of (seed, purpose, key, half); a
  stream that needs no ordering or count, so any subset of keys can be drawn alone.
  """
  keys = np.asarray(keys, dtype=np.int64).astype(np.uint64)
  base = _mix64(_mix64(np.full(1, seed, np.uint64)) ^ np.uint64(purpose))
  first = _mix64(_mix64(base ^ keys) ^ np.uint64(1))
  second = _mix64(_mix64(base ^ keys) ^ np.uint64(2))
  u1 = ((first >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53
  u2 = (second >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
  return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _mix64(x: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser (uint64 arithmetic wraps)."""
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return cast(np.ndarray, x ^ (x >> np.uint64(31)))


def expected_sigmoid(mean: np.ndarray, sigma: float = CONVERSION_SIGMA) -> np.ndarray:
  """E[sigmoid(mean + sigma * eps)], eps ~ N(0, 1), by 24-point Gauss-Hermite quadrature."""
  mean = np.asarray(mean, dtype=np.float64)
  total = np.zeros_like(mean)
  for node, weight in zip(_HERMITE_NODES, _HERMITE_WEIGHTS):
    total += weight * sigmoid(mean + sigma * np.sqrt(2.0) * node)
  return cast(np.ndarray, total / np.sqrt(np.pi))


class Oracle:
  """True P(click) and P(conversion | click) for any (request, item) pairs of a world.

  Built by `data.load(...)` (World.oracle). `request_ids` must be requests of the world (the
  oracle needs their user, time and hidden intent); `item_ids` may be any items.
  """

  def __init__(self, config: WorldConfig, entities: "Entities",
               request_truth: Dict[str, np.ndarray], features: "FeatureService") -> None:
    """entities: world.Entities; request_truth: dict of sorted request_id, user_id, timestamp,
    intent_category, intent_shop; features: features.FeatureService (for the 7-day views)."""
    self.config = config
    self._entities = entities
    self._requests = request_truth
    self._features = features
    self._purchase_intent = purchase_intent(config, request_truth["request_id"],
                                            request_truth["user_id"])

  def _pairs(self, request_ids: npt.ArrayLike,
             item_ids: npt.ArrayLike) -> Tuple[np.ndarray, np.ndarray, bool]:
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

  def _terms(self, rows: np.ndarray, item_ids: np.ndarray) -> Dict[str, np.ndarray]:
    """The per-pair inputs shared by the click and conversion models (data.world.truth)."""
    r = self._requests
    return ground_truth.pair_terms(self._entities, r["user_id"][rows], item_ids,
                            r["intent_category"][rows], r["intent_shop"][rows])

  def click_logit(self, request_ids: npt.ArrayLike, item_ids: npt.ArrayLike) -> np.ndarray:
    """True click logit at position 0, float64[n, k]."""
    rows, item_ids, squeeze = self._pairs(request_ids, item_ids)
    terms = self._terms(rows, item_ids)
    r = self._requests
    views = self._features.views_7d(np.repeat(r["user_id"][rows], item_ids.shape[1]),
                                    item_ids.reshape(-1),
                                    np.repeat(r["timestamp"][rows], item_ids.shape[1]))
    logit = click_logit(self.config, views_7d=views.reshape(item_ids.shape), **terms)
    return logit[:, 0] if squeeze else logit

  def p_click(self, request_ids: npt.ArrayLike, item_ids: npt.ArrayLike,
              positions: Optional[np.ndarray] = None) -> np.ndarray:
    """P(click), float64[n, k]; positions int[k] or int[n, k], None means position 0."""
    p = sigmoid(self.click_logit(request_ids, item_ids))
    if positions is not None:
      p = p * examination(self.config, positions)
    return p

  def conversion_mean(self, request_ids: npt.ArrayLike, item_ids: npt.ArrayLike) -> np.ndarray:
    """Mean latent purchase propensity of a click (all but the per-click noise), float64[n, k].

    It includes the request's purchase intent: the CVR ceiling's score.
    """
    rows, item_ids, squeeze = self._pairs(request_ids, item_ids)
    intent = None if self._purchase_intent is None else self._purchase_intent[rows][:, None]
    mean = conversion_mean(**self._terms(rows, item_ids), bias=self.config.conversion_bias,
                           purchase_intent=intent)
    return mean[:, 0] if squeeze else mean

  def p_convert(self, request_ids: npt.ArrayLike, item_ids: npt.ArrayLike) -> np.ndarray:
    """P(conversion | click), float64[n, k]."""
    return expected_sigmoid(self.conversion_mean(request_ids, item_ids))

  def expected_outcomes(self, request_ids: npt.ArrayLike, item_ids: npt.ArrayLike,
                        positions: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Expected clicks, conversions and GMV per shown item: dict of float64[n, k]."""
    p_click = self.p_click(request_ids, item_ids, positions)
    p_conversion = p_click * self.p_convert(request_ids, item_ids)
    price = self._entities.item_price[np.asarray(item_ids, dtype=np.int64)].astype(np.float64)
    return {"click": p_click, "conversion": p_conversion, "gmv": p_conversion * price}

