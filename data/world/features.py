"""Point-in-time feature computation, shared by the generator and the FeatureService.

Every history and cross feature of an impression at time t uses only events strictly before t.
Events of one request share its timestamp, so a request never sees its own page.

Implementation: events are sorted once by a composite int64 key `key * span + timestamp`
(key = user, or user x category / shop / brand / item); the number of events of `key` in
[t - window, t) is then the difference of two `np.searchsorted` calls. When `n_keys * span`
could overflow int64 the keys are first compressed to their ranks among the observed keys.

The behaviour sequence is the last `history_len` clicks strictly before t, ordered by
(timestamp, position) descending ("most recent first"), padded with schema.PAD_ID.
"""

from typing import Dict, Optional, Sequence, Set, Union

import numpy as np
import numpy.typing as npt

from data.world import ids as id_lookup
from data.world import schema as S
from data.world.config import SECONDS_PER_DAY
from data.world.config import WorldConfig

WINDOW_24H = SECONDS_PER_DAY
WINDOW_7D = 7 * SECONDS_PER_DAY


class EventCounter:
  """Counts events per integer key in half-open time windows [t - window, t)."""

  def __init__(self, keys: np.ndarray, timestamps: np.ndarray, n_keys: int, span: int):
    """keys in [0, n_keys); timestamps in [0, span)."""
    keys = np.asarray(keys, dtype=np.int64)
    self._span = np.int64(span)
    self._vocab = None
    if n_keys * span >= 2 ** 62:  # compress keys to ranks so the composite cannot overflow
      self._vocab, keys = np.unique(keys, return_inverse=True)
    composite = keys * self._span + np.asarray(timestamps, dtype=np.int64)
    composite.sort()
    self._sorted = composite

  def count(self, keys: np.ndarray, timestamps: np.ndarray, window: int) -> np.ndarray:
    """Events of each key in [t - window, t), int64 of the broadcast shape."""
    keys, timestamps = np.broadcast_arrays(np.asarray(keys, dtype=np.int64),
                                           np.asarray(timestamps, dtype=np.int64))
    known = np.ones(keys.shape, dtype=bool)
    if self._vocab is not None:
      ranks = np.minimum(np.searchsorted(self._vocab, keys), max(len(self._vocab) - 1, 0))
      known = (self._vocab[ranks] == keys) if len(self._vocab) else ~known
      keys = ranks
    base = keys * self._span
    upper = np.searchsorted(self._sorted, base + timestamps, side="left")
    lower = np.searchsorted(self._sorted, base + np.maximum(timestamps - window, 0),
                            side="left")
    return np.where(known, upper - lower, 0)


class ClickSequence:
  """The last clicks of each user strictly before a time, most recent first."""

  def __init__(self, users: np.ndarray, timestamps: np.ndarray, positions: np.ndarray,
               items: np.ndarray, categories: np.ndarray, shops: np.ndarray,
               span: int) -> None:
    order = np.lexsort((positions, timestamps, users))
    self._span = np.int64(span)
    self._sorted = (np.asarray(users, np.int64)[order] * self._span
                    + np.asarray(timestamps, np.int64)[order])
    self._columns = {"hist_item_ids": np.asarray(items, np.int64)[order],
                     "hist_category_ids": np.asarray(categories, np.int64)[order],
                     "hist_shop_ids": np.asarray(shops, np.int64)[order]}

  def last_before(self, users: np.ndarray, timestamps: np.ndarray,
                  length: int) -> Dict[str, np.ndarray]:
    """hist_* int64[n, length] padded with PAD_ID, and hist_len float32[n]."""
    users = np.asarray(users, np.int64)
    end = np.searchsorted(self._sorted, users * self._span + timestamps, side="left")
    start = np.searchsorted(self._sorted, users * self._span, side="left")
    n_valid = np.minimum(end - start, length)
    offsets = np.arange(1, length + 1, dtype=np.int64)
    index = end[:, None] - offsets[None, :]
    valid = offsets[None, :] <= n_valid[:, None]
    index = np.where(valid, index, 0)
    out = {}
    for name, values in self._columns.items():
      gathered = values[index] if len(values) else np.zeros(index.shape, np.int64)
      out[name] = np.where(valid, gathered, S.PAD_ID).astype(np.int64)
    out["hist_len"] = n_valid.astype(np.float32)
    return out


class ClickCounters:
  """24h click counters by user x category, user x shop and user x brand (those of `names`)."""

  KEYS = {"cross_clicks_cate_24h": ("item_category", "n_categories"),
          "cross_clicks_shop_24h": ("item_shop", "n_shops"),
          "cross_clicks_brand_24h": ("item_brand", "n_brands")}

  def __init__(self, config: WorldConfig, users: npt.ArrayLike, timestamps: np.ndarray,
               categories: np.ndarray, shops: np.ndarray, brands: np.ndarray, span: int,
               names: Sequence[str] = tuple(KEYS)) -> None:
    users = np.asarray(users, np.int64)
    self._config = config
    keys = {"item_category": categories, "item_shop": shops, "item_brand": brands}
    self._counters = {}
    for name in names:
      column, size = self.KEYS[name]
      n = getattr(config, size)
      self._counters[name] = EventCounter(users * n + keys[column], timestamps,
                                          config.n_users * n, span)

  def count(self, users: npt.ArrayLike, timestamps: np.ndarray, categories: np.ndarray,
            shops: np.ndarray, brands: Union[np.ndarray, int]) -> Dict[str, np.ndarray]:
    """float32 counts of the user's clicks in the item's category/shop/brand, last 24h."""
    users = np.asarray(users, np.int64)
    keys = {"item_category": categories, "item_shop": shops, "item_brand": brands}
    out = {}
    for name, counter in self._counters.items():
      column, size = self.KEYS[name]
      key = users * getattr(self._config, size) + keys[column]
      out[name] = counter.count(key, timestamps, WINDOW_24H).astype(np.float32)
    return out


def view_counter(config: WorldConfig, users: npt.ArrayLike, items: npt.ArrayLike,
                 timestamps: np.ndarray, span: int) -> EventCounter:
  """Counter of impressions by user x item (for cross_views_item_7d and the revisit term)."""
  keys = np.asarray(users, np.int64) * config.n_items + np.asarray(items, np.int64)
  return EventCounter(keys, timestamps, config.n_users * config.n_items, span)


def time_span(config: WorldConfig) -> int:
  """One more than the largest timestamp of the world (the composite-key stride)."""
  return config.n_days * SECONDS_PER_DAY + 1


def context_hour(timestamps: np.ndarray) -> np.ndarray:
  return (np.asarray(timestamps, np.int64) % SECONDS_PER_DAY) // 3600


class FeatureService:
  """Every serving and privileged_cross feature for any candidates of a logged request.

  Built by `data.load(...)` (World.features) from the world's logs, so it answers as of each
  request's time using only events strictly before it. Also used by the oracle for the 7-day
  views of arbitrary (request, item) pairs. For a world that declares its own schema
  (`data.world.declared`), the profile features are the world's, the derived cross features those
  it has, and a cross feature its source supplied on each impression (no candidate that was
  not logged has one) is 0: `unknown_for_candidates` names them.
  """

  def __init__(self, config: WorldConfig, users: Dict[str, np.ndarray],
               items: Dict[str, np.ndarray],
               requests: Dict[str, np.ndarray], impressions: Dict[str, np.ndarray],
               clicks: Dict[str, np.ndarray], schema: Optional[S.Schema] = None) -> None:
    """users/items: profile columns indexed by id; requests: request_id (sorted), user_id,
    timestamp; impressions: user_id, item_id, timestamp; clicks: user_id, item_id, timestamp,
    position; schema: the world's (default: the code's)."""
    self.config = config
    schema = schema or S.build_schema(config)
    span = time_span(config)
    self._users, self._items, self._requests = users, items, requests
    self._views = view_counter(config, impressions["user_id"], impressions["item_id"],
                               impressions["timestamp"], span)
    clicked = clicks["item_id"]
    self._sequence = ClickSequence(clicks["user_id"], clicks["timestamp"], clicks["position"],
                                   clicked, items["item_category"][clicked],
                                   items["item_shop"][clicked], span)
    counters = [n for n in ClickCounters.KEYS if n in schema.names]
    brands = items["item_brand"] if "item_brand" in items else np.zeros(len(clicked), np.int64)
    self._click_counters = ClickCounters(config, clicks["user_id"], clicks["timestamp"],
                                         items["item_category"][clicked],
                                         items["item_shop"][clicked],
                                         brands[clicked] if "item_brand" in items else brands,
                                         span, counters)
    self._with_views = "cross_views_item_7d" in schema.names
    derived = set(counters) | {"cross_views_item_7d"}
    self.unknown_for_candidates = [
        f.name for f in schema.features if f.entity == S.PAIR
        and f.availability == S.PRIVILEGED_CROSS and f.name not in derived]

  def candidate_features(self, users: np.ndarray, timestamps: np.ndarray,
                         item_ids: np.ndarray) -> Dict[str, np.ndarray]:
    """Item profile and cross features of candidates item_ids [n, k] of users at times [n]."""
    out = {"item_id": item_ids}
    for name, column in self._items.items():
      if name != "item_id":
        out[name] = column[item_ids]
    if "item_price" in out:
      out["item_price"] = out["item_price"].astype(np.float32)
    for name in ("item_category", "item_shop", "item_brand"):
      if name in out:
        out[name] = out[name].astype(np.int64)
    u, t = users[:, None], timestamps[:, None]
    out.update(self._click_counters.count(u, t, out["item_category"], out["item_shop"],
                                          out.get("item_brand", 0)))
    if self._with_views:
      out["cross_views_item_7d"] = self.views_7d(u, item_ids, t).astype(np.float32)
    for name in self.unknown_for_candidates:
      out[name] = np.zeros(item_ids.shape, np.float32)
    return out

  def views_7d(self, users: npt.ArrayLike, items: npt.ArrayLike,
               timestamps: np.ndarray) -> np.ndarray:
    """Impressions of each item to each user in [t - 7d, t), int64."""
    keys = np.asarray(users, np.int64) * self.config.n_items + np.asarray(items, np.int64)
    return self._views.count(keys, timestamps, WINDOW_7D)

  def compute(self, request_ids: np.ndarray, item_ids: np.ndarray,
              names: Optional[Set[str]] = None) -> Dict[str, np.ndarray]:
    """Features of candidates `item_ids` int64[n, k] for requests `request_ids` int64[n].

    Returns user/context features [n], sequences [n, L], item and cross features [n, k];
    categorical int64, numeric float32. `names` restricts the output (default: all).
    """
    request_ids = np.asarray(request_ids, np.int64).reshape(-1)
    item_ids = np.asarray(item_ids, np.int64)
    if item_ids.ndim != 2 or item_ids.shape[0] != request_ids.shape[0]:
      raise ValueError(f"item_ids must have shape [n={request_ids.shape[0]}, k], "
                       f"got {item_ids.shape}")
    if item_ids.size and (item_ids.min() < 0 or item_ids.max() >= self.config.n_items):
      raise ValueError(f"item_ids must lie in [0, {self.config.n_items})")
    rows = id_lookup.lookup_rows(self._requests["request_id"], request_ids)
    users = self._requests["user_id"][rows]
    timestamps = self._requests["timestamp"][rows]
    out = request_features(self.config, self._users, self._sequence, users, timestamps)
    out.update(self.candidate_features(users, timestamps, item_ids))
    if names is not None:
      out = {k: v for k, v in out.items() if k in names}
    return out


def request_features(config: WorldConfig, users_table: Dict[str, np.ndarray],
                     sequence: ClickSequence, users: np.ndarray,
                     timestamps: np.ndarray) -> Dict[str, np.ndarray]:
  """User profile, behaviour sequence and context of requests: arrays of [n] or [n, L]."""
  out = {"user_id": np.asarray(users, np.int64)}
  for name, column in users_table.items():
    if name != "user_id":
      out[name] = column[users].astype(np.int64)
  out.update(sequence.last_before(users, timestamps, config.history_len))
  out["context_hour"] = context_hour(timestamps)
  return out
