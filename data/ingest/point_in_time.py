"""The derived point-in-time features of an ingested world, one day at a time.

The simulator computes them over its whole log at once with data/world/features.py. An ingested
world is built day by day (data/ingest/world_builder.py) so that memory does not grow with
the log; each day gets the same features, from the same code, out of what it needs of the
days before, carried from day to day:

  - the behaviour sequence (the last `history_len` clicks strictly before the request): each
    user's last `history_len` clicks of the days before (an older click can never be among
    the last ones before a later request), plus the day's own clicks;
  - the 24h click counters by category, shop and brand: the events (the behaviour log when one
    is given, else the logged clicks) of the day before and of the day;
  - the 7-day views of the item: the impressions of the 7 days before and of the day.

Windows are half-open, [t - w, t), so nothing at or after the request's time is counted. A
count over a window is the same over any part of the log that holds the window, and the
sequence keeps the whole-log order (ties in time and position stay in input order), so the
features are the numbers the whole-log computation gives. A large day may come in slices of
whole requests in time order (data/ingest/day_rows.py): each slice counts the day's earlier
slices too, so the numbers do not depend on the slicing. Memory: one slice, the day's
counter events and (user, item, time) triples so far, 7 days of triples, and at most
`history_len` clicks per user.
"""

import collections
from typing import Callable, Deque, Dict, List, Optional, Sequence

import numpy as np

from data.world import features as F
from data.world import schema as S
from data.world.config import WorldConfig

COUNTER_SLOTS = ("cross_clicks_cate_24h", "cross_clicks_shop_24h", "cross_clicks_brand_24h")
VIEWS_SLOT = "cross_views_item_7d"
_CLICK_COLUMNS = (S.USER_ID, S.TIMESTAMP, S.POSITION, S.ITEM_ID)
_EVENT_COLUMNS = (S.USER_ID, S.ITEM_ID, S.TIMESTAMP)
Events = Dict[str, np.ndarray]


def _concat(parts: Sequence[Events], columns: Sequence[str]) -> Events:
  return {k: np.concatenate([np.asarray(p[k], np.int64) for p in parts]) for k in columns}


def _last_per_user(clicks: Events, length: int, until: int) -> Events:
  """Each user's last `length` clicks before `until`, sorted by (user, time, position), ties
  in input order, then every click at or after `until` (a later slice's requests at `until`
  must not lose an earlier click to one they cannot see)."""
  late = clicks[S.TIMESTAMP] >= until
  early = {k: v[~late] for k, v in clicks.items()}
  order = np.lexsort((early[S.POSITION], early[S.TIMESTAMP], early[S.USER_ID]))
  users = early[S.USER_ID][order]
  group_end = np.searchsorted(users, users, side="right")
  keep = order[group_end - np.arange(len(users)) <= length]
  return {k: np.concatenate([v[keep], clicks[k][late]]) for k, v in early.items()}


class DayByDayFeatures:
  """Derives each day's requests and missing cross slots, days visited in order 1, 2, ..."""

  def __init__(self, config: WorldConfig, items: Dict[str, np.ndarray],
               behaviour: Optional[Callable[[int], Events]],
               derive: Sequence[str] = COUNTER_SLOTS + (VIEWS_SLOT,)) -> None:
    """`behaviour(day)`: the behaviour log's events of one day on the world's clock, or None
    to count the logged clicks instead; `derive`: the cross features to compute (those the
    world has and the source did not supply)."""
    self._config, self._items, self._behaviour = config, items, behaviour
    self._counters = [slot for slot in COUNTER_SLOTS if slot in derive]
    self._views = VIEWS_SLOT in derive
    self._span = F.time_span(config)
    empty = {k: np.zeros(0, np.int64) for k in _CLICK_COLUMNS}
    self._history: Events = empty  # each user's last clicks before the slice
    self._yesterday: Events = {k: empty[k] for k in _EVENT_COLUMNS}  # counter events
    self._week: Deque[Events] = collections.deque(maxlen=7)  # impressions, day by day
    self._day: Optional[int] = None
    self._today: List[Events] = []  # the day's counter events so far (or all of its log's)
    self._today_impressions: List[Events] = []  # the day's impressions so far

  def _start(self, day: int) -> None:
    """Carries the finished day over: its counter events become the day before's, its
    impressions join the week's."""
    if self._day is not None:
      self._yesterday = _concat(self._today, _EVENT_COLUMNS) if self._today else self._yesterday
      if self._today_impressions:
        self._week.append(_concat(self._today_impressions, _EVENT_COLUMNS))
    self._day = day
    wants_counts = bool(self._counters)
    self._today = ([self._behaviour(day)] if wants_counts and self._behaviour is not None
                   else [])
    self._today_impressions = []

  def day(self, day: int, imp: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Fills the cross slots `imp` (a day's impressions on the world's clock, or one slice of
    them: slices of one day come in time order) lacks, and returns its requests with their
    behaviour sequence."""
    if day != self._day:
      self._start(day)
    clicked = imp[S.CLICK] > 0
    clicks = {k: np.asarray(imp[k][clicked], np.int64) for k in _CLICK_COLUMNS}
    requests = self._requests(imp, clicks)
    missing = [slot for slot in self._counters if slot not in imp]
    if missing:
      if self._behaviour is None:
        self._today.append({k: clicks[k] for k in _EVENT_COLUMNS})
      counts = self._counts(_concat([self._yesterday] + self._today, _EVENT_COLUMNS), imp,
                            missing)
      for slot in missing:
        imp[slot] = counts[slot]
    impressions = {k: np.asarray(imp[k], np.int64) for k in _EVENT_COLUMNS}
    if self._views and VIEWS_SLOT not in imp:
      self._today_impressions.append(impressions)
      window = _concat(list(self._week) + self._today_impressions, _EVENT_COLUMNS)
      views = F.view_counter(self._config, window[S.USER_ID], window[S.ITEM_ID],
                             window[S.TIMESTAMP], self._span)
      keys = impressions[S.USER_ID] * self._config.n_items + impressions[S.ITEM_ID]
      imp[VIEWS_SLOT] = views.count(keys, impressions[S.TIMESTAMP],
                                    F.WINDOW_7D).astype(np.float32)
    return requests

  def _requests(self, imp: Events, clicks: Events) -> Dict[str, np.ndarray]:
    """One row per request with the behaviour sequence of clicks strictly before it."""
    request_ids, first = np.unique(imp[S.REQUEST_ID], return_index=True)
    out = {S.REQUEST_ID: request_ids.astype(np.int64),
           S.USER_ID: imp[S.USER_ID][first].astype(np.int64),
           S.DAY: imp[S.DAY][first], S.TIMESTAMP: imp[S.TIMESTAMP][first]}
    history = _concat([self._history, clicks], _CLICK_COLUMNS)
    item = history[S.ITEM_ID]
    sequence = F.ClickSequence(history[S.USER_ID], history[S.TIMESTAMP], history[S.POSITION],
                               item, self._items["item_category"][item],
                               self._items["item_shop"][item], self._span)
    out.update(sequence.last_before(out[S.USER_ID], out[S.TIMESTAMP],
                                    self._config.history_len))
    out["context_hour"] = F.context_hour(out[S.TIMESTAMP])
    self._history = _last_per_user(history, self._config.history_len,
                                   int(out[S.TIMESTAMP].max(initial=0)))
    return out

  def _counts(self, events: Events, imp: Events, names: Sequence[str]) -> Dict[str, np.ndarray]:
    """The 24h counters `names` of the impressions, from the events of the day before and the
    day."""
    item, shown = events[S.ITEM_ID], imp[S.ITEM_ID]
    brand = self._items.get("item_brand", np.zeros(len(self._items[S.ITEM_ID]), np.int64))
    counters = F.ClickCounters(self._config, events[S.USER_ID], events[S.TIMESTAMP],
                               self._items["item_category"][item],
                               self._items["item_shop"][item], brand[item], self._span, names)
    return counters.count(imp[S.USER_ID], imp[S.TIMESTAMP], self._items["item_category"][shown],
                          self._items["item_shop"][shown], brand[shown])
