"""The simulated world: entities, traffic, the logging policy, clicks, post-click, conversions.

Everything is vectorised numpy over a whole day of one user shard; no per-impression loop.

Random streams. Entities (users' and items' attributes, hidden or not) come from the global
seed. Traffic comes from per-shard streams, one per (shard, day, purpose), derived with
`np.random.SeedSequence(seed, spawn_key=...)`: shards are independent (they can run in
separate processes) and purposes are independent, so e.g. raising `post_click_noise` changes
the post-click signals but not a single click or conversion (common random numbers across
knob settings).

Per day and shard:
  1. requests: Poisson(requests_per_user_day) per user, timestamps with a diurnal profile;
  2. hidden short-term intent: a category (and a favoured shop in it) per request, a Markov
     chain over the user's consecutive requests that redraws with prob `intent_drift` from
     the user's long-term category preference;
  3. logging policy (a noisy earlier model, independent of clicks): `page_size` distinct items
     from the noisily observed intent category, from the long-term preference by popularity,
     and a `logging_exploration` share uniformly at random, ordered by a noisy policy score;
  4. clicks ~ Bernoulli(oracle P(click)), with the 7-day views from impressions strictly
     before each request;
  5. for clicks: latent z = conversion_mean + sigma * eps, where conversion_mean includes the
     request's purchase intent (if `purchase_intent_sd` > 0; oracle.purchase_intent, a hashed
     draw per user and request, so no stream above shifts); conversion ~ Bernoulli(sigmoid(z));
     post-click signals are noisy functions of z (dwell also grows with price), centred on
     `conversion_bias` so that it moves conversions and not the signals.
"""

import dataclasses
from typing import Dict, cast

import numpy as np

from data.world import features as F
from data.world import oracle as O
from data.world import schema as S
from data.world import truth as ground_truth
from data.world.config import SECONDS_PER_DAY
from data.world.config import WorldConfig

# Entity generation.
AGE_PROBS = (0.06, 0.20, 0.26, 0.20, 0.14, 0.09, 0.05)
POWER_PROBS = (0.15, 0.25, 0.30, 0.20, 0.10)
PREFERRED_CATEGORIES = 5          # long-term preference: a mixture over this many categories
CATEGORY_ZIPF = 0.8               # category popularity ~ 1 / rank ** CATEGORY_ZIPF
GLOBAL_INTENT_SHARE = 0.1         # share of new intents drawn from global popularity
SHOP_PRIMARY_WEIGHT = 4           # a shop sells mostly its primary category, some secondary
BRAND_HOME_SHARE = 0.8            # share of items whose brand is one of its category's brands
# Diurnal profile of request hours (relative weights, hour 0..23).
HOUR_WEIGHTS = (3, 2, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 7, 6, 5, 5, 6, 7, 8, 9, 10, 10, 8, 5)
# Logging policy.
POLICY_INTENT_ACCURACY = 0.6      # P(the policy sees the true intent category)
POLICY_OVERSAMPLE = 2             # candidates drawn per slot before de-duplication
# Post-click signals: (intercept, slope on z - Z_CENTER) of each Bernoulli signal. Z_CENTER
# belongs to the dense world's conversion_bias and moves with the world's (signal_center).
Z_CENTER = -2.5
# The config knob added to each signal's intercept (0 for signals without one).
SIGNAL_SHIFTS = {"added_to_cart": "cart_shift", "favorited": "favorite_shift"}
BINARY_SIGNALS = {"read_comments": (0.0, 0.9), "chatted_with_seller": (-2.0, 0.8),
                  "added_to_cart": (-1.0, 1.2), "favorited": (-1.5, 0.7)}
DWELL_LOG_BASE, DWELL_Z_SLOPE, DWELL_PRICE_SLOPE, DWELL_NOISE = 3.2, 0.35, 0.45, 0.5

# Purposes of the per-(shard, day) random streams.
_TRAFFIC, _INTENT, _POLICY, _CLICK, _CONVERSION, _POST_CLICK = range(6)


def rng(seed: int, *key: int) -> np.random.Generator:
  """An independent, reproducible stream for `key` (e.g. (shard, day, purpose))."""
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


@dataclasses.dataclass
class Entities:
  """Users and items, observable and hidden, indexed by id (row i has id i)."""
  user_age_bucket: np.ndarray
  user_gender: np.ndarray
  user_power_level: np.ndarray
  user_taste: np.ndarray               # hidden float32[n_users, taste_dim]
  user_pref_categories: np.ndarray     # hidden int64[n_users, PREFERRED_CATEGORIES]
  user_pref_weights: np.ndarray        # hidden float32[n_users, PREFERRED_CATEGORIES]
  user_price_sensitivity: np.ndarray   # hidden float32[n_users]
  item_category: np.ndarray
  item_shop: np.ndarray
  item_brand: np.ndarray
  item_price: np.ndarray               # float32
  item_quality: np.ndarray             # hidden float32
  item_taste: np.ndarray               # hidden float32[n_items, taste_dim]
  item_popularity: np.ndarray          # hidden float32, the logging policy's prior
  category_popularity: np.ndarray      # hidden float64[n_categories], sums to 1

  def users_table(self) -> Dict[str, np.ndarray]:
    n = len(self.user_gender)
    return {S.USER_ID: np.arange(n, dtype=np.int64),
            **{k: getattr(self, k) for k in S.USER_PROFILE}}

  def items_table(self) -> Dict[str, np.ndarray]:
    n = len(self.item_category)
    return {S.ITEM_ID: np.arange(n, dtype=np.int64),
            **{k: getattr(self, k) for k in S.ITEM_PROFILE}}


def make_entities(config: WorldConfig) -> Entities:
  """Draws every user and item from the global seed."""
  r = rng(config.seed, 0)
  category_popularity = 1.0 / np.arange(1, config.n_categories + 1) ** CATEGORY_ZIPF
  category_popularity = r.permutation(category_popularity / category_popularity.sum())
  centroids = _unit_rows(r.standard_normal((config.n_categories, config.taste_dim)))
  items = _make_items(config, r, category_popularity, centroids)
  users = _make_users(config, r, category_popularity, centroids)
  return Entities(**users, **items, category_popularity=category_popularity)


def _unit_rows(x: np.ndarray) -> np.ndarray:
  return cast(np.ndarray, x / np.linalg.norm(x, axis=1, keepdims=True))


def _make_items(config: WorldConfig, r: np.random.Generator, category_popularity: np.ndarray,
                centroids: np.ndarray) -> Dict[str, np.ndarray]:
  c = config
  # Every category has at least one item; the rest follow category popularity.
  category = np.concatenate([np.arange(c.n_categories),
                             r.choice(c.n_categories, c.n_items - c.n_categories,
                                      p=category_popularity)])
  category = r.permutation(category).astype(np.int64)
  shop = _pick_by_home(r, category, c.n_categories, c.n_shops, primary_weight=SHOP_PRIMARY_WEIGHT)
  brand = _pick_by_home(r, category, c.n_categories, c.n_brands, primary_weight=0)
  foreign = r.random(c.n_items) > BRAND_HOME_SHARE
  brand[foreign] = r.integers(0, c.n_brands, foreign.sum())
  log_price_mean = np.log(60.0) + 0.9 * r.standard_normal(c.n_categories)
  log_price = log_price_mean[category] + 0.5 * r.standard_normal(c.n_items)
  price = np.clip(np.round(np.exp(log_price), 2), 1.0, 20_000.0).astype(np.float32)
  quality = (0.5 * r.standard_normal(c.n_items)).astype(np.float32)
  taste = 0.9 * centroids[category] + (0.45 / np.sqrt(c.taste_dim)) * r.standard_normal(
      (c.n_items, c.taste_dim))
  popularity = np.exp(quality + 0.7 * r.standard_normal(c.n_items)).astype(np.float32)
  return dict(item_category=category, item_shop=shop, item_brand=brand, item_price=price,
              item_quality=quality, item_taste=taste.astype(np.float32),
              item_popularity=popularity)


def _pick_by_home(r: np.random.Generator, category: np.ndarray, n_categories: int, n_owners: int,
                  primary_weight: int) -> np.ndarray:
  """Assigns each item an owner (shop or brand) whose home categories include its category.

  Owner o has primary category o % n_categories (weight max(primary_weight, 1)) and, if
  primary_weight > 0, a random secondary category (weight 1). Categories without owners get a
  uniformly random one.
  """
  owners = np.arange(n_owners, dtype=np.int64)
  home = [owners % n_categories]
  copies = [max(primary_weight, 1)]
  if primary_weight > 0:
    home.append(r.integers(0, n_categories, n_owners))
    copies.append(1)
  entry_category = np.concatenate([np.repeat(h, k) for h, k in zip(home, copies)])
  entry_owner = np.concatenate([np.repeat(owners, k) for k in copies])
  order = np.argsort(entry_category, kind="stable")
  entry_category, entry_owner = entry_category[order], entry_owner[order]
  start = np.searchsorted(entry_category, np.arange(n_categories), side="left")
  count = np.searchsorted(entry_category, np.arange(n_categories), side="right") - start
  u = r.random(len(category))
  n = count[category]
  pick = entry_owner[np.minimum(start[category] + (u * n).astype(np.int64),
                                len(entry_owner) - 1)]
  orphan = n == 0
  pick[orphan] = r.integers(0, n_owners, orphan.sum())
  return cast(np.ndarray, pick.astype(np.int64))


def _make_users(config: WorldConfig, r: np.random.Generator, category_popularity: np.ndarray,
                centroids: np.ndarray) -> Dict[str, np.ndarray]:
  c = config
  age = r.choice(7, c.n_users, p=AGE_PROBS).astype(np.int64)
  gender = r.integers(0, 2, c.n_users).astype(np.int64)
  power = r.choice(5, c.n_users, p=POWER_PROBS).astype(np.int64)
  sensitivity = np.clip(0.9 - 0.15 * power + 0.15 * r.standard_normal(c.n_users), 0.05, None)
  pref_categories = r.choice(c.n_categories, (c.n_users, PREFERRED_CATEGORIES),
                             p=category_popularity).astype(np.int64)
  pref_weights = r.dirichlet(np.ones(PREFERRED_CATEGORIES), c.n_users)
  taste = np.einsum("uk,ukd->ud", pref_weights, centroids[pref_categories])
  taste = _unit_rows(taste + (0.3 / np.sqrt(c.taste_dim)) * r.standard_normal(taste.shape))
  return dict(user_age_bucket=age, user_gender=gender, user_power_level=power,
              user_taste=taste.astype(np.float32), user_pref_categories=pref_categories,
              user_pref_weights=pref_weights.astype(np.float32),
              user_price_sensitivity=sensitivity.astype(np.float32))


class ItemSampler:
  """Samples items of given categories, uniformly or by the logging policy's popularity."""

  def __init__(self, entities: Entities) -> None:
    self._order = np.argsort(entities.item_category, kind="stable")
    sorted_category = entities.item_category[self._order]
    n_categories = len(entities.category_popularity)
    self._start = np.searchsorted(sorted_category, np.arange(n_categories), side="left")
    self._count = np.searchsorted(sorted_category, np.arange(n_categories),
                                  side="right") - self._start
    mass = entities.item_popularity[self._order].astype(np.float64)
    self._cumulative = np.cumsum(mass)
    self._mass_before = self._cumulative[self._start] - mass[self._start]
    self._mass_end = self._cumulative[self._start + self._count - 1]
    self._shop = entities.item_shop

  def uniform(self, r: np.random.Generator, categories: np.ndarray) -> np.ndarray:
    offset = (r.random(categories.shape) * self._count[categories]).astype(np.int64)
    return cast(np.ndarray, self._order[self._start[categories] + offset])

  def popular(self, r: np.random.Generator, categories: np.ndarray) -> np.ndarray:
    lo, hi = self._mass_before[categories], self._mass_end[categories]
    index = np.searchsorted(self._cumulative, lo + r.random(categories.shape) * (hi - lo),
                            side="right")
    last = self._start[categories] + self._count[categories] - 1
    return cast(np.ndarray, self._order[np.clip(index, self._start[categories], last)])

  def shop_in(self, r: np.random.Generator, categories: np.ndarray) -> np.ndarray:
    """A favoured shop within each category (the shop of a random item of it)."""
    return cast(np.ndarray, self._shop[self.uniform(r, categories)])


def sample_preferred_category(r: np.random.Generator, entities: Entities,
                              users: np.ndarray) -> np.ndarray:
  """Draws from each user's long-term category preference (smoothed by global popularity)."""
  cumulative = np.cumsum(entities.user_pref_weights[users].astype(np.float64), axis=1)
  u = r.random(len(users)) * cumulative[:, -1]
  slot = np.minimum((cumulative < u[:, None]).sum(axis=1), PREFERRED_CATEGORIES - 1)
  category = entities.user_pref_categories[users, slot]
  use_global = r.random(len(users)) < GLOBAL_INTENT_SHARE
  category[use_global] = r.choice(len(entities.category_popularity), use_global.sum(),
                                  p=entities.category_popularity)
  return cast(np.ndarray, category)


@dataclasses.dataclass
class DayLog:
  """One simulated day of one shard: request-level and impression-level arrays."""
  requests: Dict[str, np.ndarray]      # request_id, user_id, day, timestamp, context_hour, hist_*
  request_truth: Dict[str, np.ndarray]  # request_id, intent_category, intent_shop
  impressions: Dict[str, np.ndarray]   # every scalar log column, request order then position


class ShardSimulator:
  """Simulates the traffic of one user shard day after day, carrying its state.

  State: each user's current intent; every click of the shard (for histories and 24h
  counters); the last 8 days of impressions (for 7-day views). Memory stays bounded by a
  week of impressions.
  """

  def __init__(self, config: WorldConfig, entities: Entities, sampler: ItemSampler,
               shard: int):
    c = config
    self.config, self.entities, self.sampler, self.shard = config, entities, sampler, shard
    self.user_lo = shard * c.n_users // c.n_user_shards
    self.user_hi = (shard + 1) * c.n_users // c.n_user_shards
    r = rng(c.seed, 1, shard)
    users = np.arange(self.user_lo, self.user_hi)
    self.intent_category = sample_preferred_category(r, entities, users)
    self.intent_shop = sampler.shop_in(r, self.intent_category)
    self.next_ordinal = 0
    self.span = F.time_span(c)
    empty = np.zeros(0, np.int64)
    self.clicks = {"user_id": empty, "item_id": empty, "timestamp": empty, "position": empty}
    self.window = {"user_id": empty, "item_id": empty, "timestamp": empty}

  def simulate_day(self, day: int) -> DayLog:
    requests = self._requests(day)
    truth = self._intents(day, requests)
    pages = self._logging_policy(day, requests, truth)
    impressions = self._impressions(requests, pages)
    self._outcomes(day, requests, truth, impressions)
    self._update_state(day, impressions)
    self._features(requests, impressions)
    requests["day"] = np.full(len(requests["request_id"]), day, np.int64)
    impressions["day"] = np.full(len(impressions["request_id"]), day, np.int64)
    return DayLog(requests, {"request_id": requests["request_id"], **truth}, impressions)

  def _requests(self, day: int) -> Dict[str, np.ndarray]:
    """Poisson requests per user with diurnal timestamps, ordered by (timestamp, user)."""
    c = self.config
    r = rng(c.seed, 2, self.shard, day, _TRAFFIC)
    counts = r.poisson(c.requests_per_user_day, self.user_hi - self.user_lo)
    users = np.repeat(np.arange(self.user_lo, self.user_hi, dtype=np.int64), counts)
    hour_probs = np.asarray(HOUR_WEIGHTS, np.float64) / sum(HOUR_WEIGHTS)
    hour = r.choice(24, len(users), p=hour_probs)
    timestamp = ((day - 1) * SECONDS_PER_DAY + hour * 3600
                 + r.integers(0, 3600, len(users))).astype(np.int64)
    order = np.lexsort((users, timestamp))
    users, timestamp = users[order], timestamp[order]
    request_id = request_ids(self.shard, self.next_ordinal, len(users))
    self.next_ordinal += len(users)
    return {"request_id": request_id, "user_id": users, "timestamp": timestamp,
            "context_hour": F.context_hour(timestamp)}

  def _intents(self, day: int, requests: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Advances each user's hidden intent over their requests of the day (a Markov chain)."""
    c = self.config
    r = rng(c.seed, 2, self.shard, day, _INTENT)
    order = np.argsort(requests["user_id"], kind="stable")  # (user, time) order
    users = requests["user_id"][order]
    m = len(users)
    changed = r.random(m) < c.intent_drift
    new_category = sample_preferred_category(r, self.entities, users)
    new_shop = self.sampler.shop_in(r, new_category)
    ordinal = np.arange(m)
    first = np.r_[True, users[1:] != users[:-1]] if m else np.zeros(0, bool)
    last_change = np.maximum.accumulate(np.where(changed, ordinal, -1)) if m else ordinal
    group_start = np.maximum.accumulate(np.where(first, ordinal, 0)) if m else ordinal
    fresh = last_change >= group_start
    source = np.maximum(last_change, 0)
    local = users - self.user_lo
    category = np.where(fresh, new_category[source], self.intent_category[local])
    shop = np.where(fresh, new_shop[source], self.intent_shop[local])
    last = np.r_[users[1:] != users[:-1], True] if m else np.zeros(0, bool)
    self.intent_category[local[last]] = category[last]
    self.intent_shop[local[last]] = shop[last]
    out_category, out_shop = np.empty_like(category), np.empty_like(shop)
    out_category[order], out_shop[order] = category, shop
    return {"intent_category": out_category.astype(np.int64),
            "intent_shop": out_shop.astype(np.int64)}

  def _logging_policy(self, day: int, requests: Dict[str, np.ndarray],
                      truth: Dict[str, np.ndarray]) -> np.ndarray:
    """Pages of `page_size` distinct items per request, best policy score first."""
    c = self.config
    r = rng(c.seed, 2, self.shard, day, _POLICY)
    users = requests["user_id"]
    n, m = len(users), c.page_size * POLICY_OVERSAMPLE
    sees_intent = r.random(n) < POLICY_INTENT_ACCURACY
    observed = np.where(sees_intent, truth["intent_category"],
                        sample_preferred_category(r, self.entities, users))
    mix = (c.logging_exploration, (1 - c.logging_exploration) / 2,
           (1 - c.logging_exploration) / 2)
    source = r.choice(3, (n, m), p=mix)  # 0 explore, 1 intent category, 2 long-term taste
    items = np.empty((n, m), np.int64)
    explore, intent, taste = source == 0, source == 1, source == 2
    items[explore] = r.integers(0, c.n_items, explore.sum())
    items[intent] = self.sampler.uniform(r, np.broadcast_to(observed[:, None], (n, m))[intent])
    taste_users = np.broadcast_to(users[:, None], (n, m))[taste]
    items[taste] = self.sampler.popular(
        r, sample_preferred_category(r, self.entities, taste_users))
    score = np.array([0.0, 1.0, 0.5])[source] + r.gumbel(size=(n, m))
    by_score = np.argsort(-score, axis=1, kind="stable")
    items = np.take_along_axis(items, by_score, axis=1)
    return _distinct_prefix(r, items, c.page_size, c.n_items)

  def _impressions(self, requests: Dict[str, np.ndarray],
                   pages: np.ndarray) -> Dict[str, np.ndarray]:
    n, k = pages.shape
    return {"request_id": np.repeat(requests["request_id"], k),
            "timestamp": np.repeat(requests["timestamp"], k),
            "position": np.tile(np.arange(k, dtype=np.int64), n),
            "user_id": np.repeat(requests["user_id"], k),
            "item_id": pages.reshape(-1)}

  def _outcomes(self, day: int, requests: Dict[str, np.ndarray], truth: Dict[str, np.ndarray],
                imp: Dict[str, np.ndarray]) -> None:
    """Draws clicks, conversions and post-click signals from the oracle's probabilities."""
    c, e = self.config, self.entities
    users, items = imp["user_id"], imp["item_id"]
    page = c.page_size
    counter = F.view_counter(c, np.concatenate([self.window["user_id"], users]),
                             np.concatenate([self.window["item_id"], items]),
                             np.concatenate([self.window["timestamp"], imp["timestamp"]]),
                             self.span)
    views = counter.count(users * c.n_items + items, imp["timestamp"], F.WINDOW_7D)
    imp["cross_views_item_7d"] = views.astype(np.float32)
    terms = ground_truth.pair_terms(e, users, items, np.repeat(truth["intent_category"], page),
                                    np.repeat(truth["intent_shop"], page))
    p_click = (O.sigmoid(O.click_logit(c, views_7d=views, **terms))
               * O.examination(c, imp["position"]))
    click = rng(c.seed, 2, self.shard, day, _CLICK).random(len(items)) < p_click
    clicked = {k: v[click] for k, v in terms.items()}
    intent = O.purchase_intent(c, requests["request_id"], requests["user_id"])
    if intent is not None:
      intent = np.repeat(intent, page)[click]
    r = rng(c.seed, 2, self.shard, day, _CONVERSION)
    z = (O.conversion_mean(**clicked, bias=c.conversion_bias, purchase_intent=intent)
         + O.CONVERSION_SIGMA * r.standard_normal(click.sum()))
    converted = r.random(click.sum()) < O.sigmoid(z)
    signals = post_click_signals(rng(c.seed, 2, self.shard, day, _POST_CLICK), c, z,
                                 clicked["log_price"])
    for name, values in signals.items():
      column = np.zeros(len(items), values.dtype)
      column[click] = values
      imp[name] = column
    imp["click"] = click.astype(np.float32)
    conversion = np.zeros(len(items), np.float32)
    conversion[click] = converted
    imp["conversion"] = conversion
    imp["gmv"] = (conversion * e.item_price[items]).astype(np.float32)

  def _update_state(self, day: int, imp: Dict[str, np.ndarray]) -> None:
    """Appends the day's clicks; keeps the impressions a 7-day window can still reach."""
    click = imp["click"] > 0
    for name in self.clicks:
      self.clicks[name] = np.concatenate([self.clicks[name], imp[name][click]])
    horizon = (day - 7) * SECONDS_PER_DAY  # tomorrow's earliest t - 7d
    for name in self.window:
      self.window[name] = np.concatenate([self.window[name], imp[name]])
    keep = self.window["timestamp"] >= horizon
    self.window = {k: v[keep] for k, v in self.window.items()}

  def _features(self, requests: Dict[str, np.ndarray], imp: Dict[str, np.ndarray]) -> None:
    """Point-in-time user, context, item, history and 24h cross features of the day."""
    c, e = self.config, self.entities
    clicked = self.clicks["item_id"]
    sequence = F.ClickSequence(self.clicks["user_id"], self.clicks["timestamp"],
                               self.clicks["position"], clicked, e.item_category[clicked],
                               e.item_shop[clicked], self.span)
    requests.update(sequence.last_before(requests["user_id"], requests["timestamp"],
                                         c.history_len))
    counters = F.ClickCounters(c, self.clicks["user_id"], self.clicks["timestamp"],
                               e.item_category[clicked], e.item_shop[clicked],
                               e.item_brand[clicked], self.span)
    users, items = imp["user_id"], imp["item_id"]
    for name in S.USER_PROFILE:
      imp[name] = getattr(e, name)[users]
    imp["context_hour"] = F.context_hour(imp["timestamp"])
    for name in S.ITEM_PROFILE:
      imp[name] = getattr(e, name)[items]
    imp.update(counters.count(users, imp["timestamp"], imp["item_category"],
                              imp["item_shop"], imp["item_brand"]))


def request_ids(shard: int, first_ordinal: int, count: int) -> np.ndarray:
  """Globally unique, deterministic request ids: shard in the high bits, ordinal below."""
  return (np.int64(shard) << np.int64(SHARD_SHIFT)) + first_ordinal + np.arange(
      count, dtype=np.int64)


SHARD_SHIFT = 40  # up to 2**40 requests per shard


def post_click_signals(r: np.random.Generator, config: WorldConfig, z: np.ndarray,
                       log_price: np.ndarray) -> Dict[str, np.ndarray]:
  """Noisy consequences of the purchase propensity z; dwell also grows with price."""
  noise = config.post_click_noise
  zc = z - signal_center(config)
  log_dwell = (DWELL_LOG_BASE + DWELL_Z_SLOPE * zc
               + DWELL_PRICE_SLOPE * (log_price - O.LOG_PRICE_CENTER)
               + DWELL_NOISE * noise * r.standard_normal(len(z)))
  out = {"dwell_seconds": np.clip(np.round(np.exp(log_dwell), 1), 1.0, 3600.0)
         .astype(np.float32)}
  for name, (intercept, slope) in BINARY_SIGNALS.items():
    shift = getattr(config, SIGNAL_SHIFTS[name]) if name in SIGNAL_SHIFTS else 0.0
    logit = (intercept + shift) + slope * zc + noise * r.standard_normal(len(z))
    out[name] = (r.random(len(z)) < O.sigmoid(logit)).astype(np.int64)
  return out


def signal_center(config: WorldConfig) -> float:
  """The z the post-click signals are centred on: Z_CENTER, moved with conversion_bias."""
  return Z_CENTER + (config.conversion_bias - O.CONVERSION_BIAS)


def _distinct_prefix(r: np.random.Generator, items: np.ndarray, page_size: int,
                     n_items: int) -> np.ndarray:
  """The first `page_size` distinct items of each row (rows lacking some are refilled)."""
  while True:
    duplicate = _duplicates(items)
    short = (~duplicate).sum(axis=1) < page_size
    if not short.any():
      break
    rows = np.nonzero(short)[0]
    block, block_dup = items[rows], duplicate[rows]
    block[block_dup] = r.integers(0, n_items, block_dup.sum())
    items[rows] = block
  keep = np.argsort(duplicate, axis=1, kind="stable")[:, :page_size]
  return np.take_along_axis(items, keep, axis=1)


def _duplicates(items: np.ndarray) -> np.ndarray:
  """True where an item already appeared earlier in its row."""
  order = np.argsort(items, axis=1, kind="stable")
  sorted_items = np.take_along_axis(items, order, axis=1)
  repeat = np.zeros(items.shape, bool)
  repeat[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
  out = np.empty_like(repeat)
  np.put_along_axis(out, order, repeat, axis=1)
  return out
