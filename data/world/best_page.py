"""The oracle's best page: the K items of the whole corpus with the highest true value.

The replay scores each shown page against the page the oracle itself would show: the K items
of highest true value on the page's objective (ctr: P(click at position 0); ctcvr: times
P(conversion | click); ctcvr_gmv: times the price). It depends only on the world, the day, K
and the objective, never on the models, so `CachedBestPage` keeps the pages on disk for the
replays of other variants. Pure numpy, next to the oracle whose formulas it screens with.
"""

import dataclasses
import os
from typing import TYPE_CHECKING, List, Tuple

import numpy as np
import numpy.typing as npt

from data.plumbing import files
from data.world import ids as id_lookup
from data.world import oracle as oracle_lib
from data.world import truth
from data.world.config import SECONDS_PER_DAY

if TYPE_CHECKING:  # io reads worlds; this module only uses one
  from data.world.io import World


def oracle_item_values(oracle: oracle_lib.Oracle, request_ids: np.ndarray, item_ids: np.ndarray,
                       rank_by: str, prices: np.ndarray) -> np.ndarray:
  """The true per-item value of `rank_by` at position 0: P(click) [* P(conv) [* price]]."""
  value = oracle.p_click(request_ids, item_ids)
  if rank_by in ("ctcvr", "ctcvr_gmv"):
    value = value * oracle.p_convert(request_ids, item_ids)
  if rank_by == "ctcvr_gmv":
    value = value * prices[item_ids].astype(np.float64)
  return value


class ConversionBounds:
  """Lower and upper bounds of P(conversion | click) as a function of its latent mean.

  P(conv | click) = expected_sigmoid(mean) is increasing in the mean, so its values at the
  grid points around a mean bound it from both sides. Used to screen the corpus; the items
  that pass are then valued exactly by the oracle.
  """

  LOW, HIGH, STEP = -40.0, 40.0, 1.0 / 256

  def __init__(self) -> None:
    grid = np.arange(self.LOW, self.HIGH + self.STEP / 2, self.STEP)
    values = oracle_lib.expected_sigmoid(grid)
    # Cell c >= 1 holds means in [grid[c-1], grid[c]); cell 0 everything below the grid and
    # the last cell everything above it (np.take's mode="clip" sends outliers there).
    self._lower = np.concatenate([[0.0], values]).astype(np.float32)
    self._upper = np.concatenate([values, [1.0]]).astype(np.float32)

  def __call__(self, means: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of each mean; overwrites `means` (a temporary) to save memory passes."""
    means -= np.float32(self.LOW - self.STEP)
    means *= np.float32(1.0 / self.STEP)
    cell = means.astype(np.int32)  # truncation: negative cells clip to 0, which is safe
    return (np.take(self._lower, cell, mode="clip"), np.take(self._upper, cell, mode="clip"))


# Relative error allowed for the float32 screen (far above its rounding error, ~1e-6).
_SCREEN_SLACK = 1e-3


@dataclasses.dataclass
class _Screen:
  """Running state of the best-page screen of a block of requests over the corpus."""
  top_lower: np.ndarray   # [b, K] the K largest lower bounds seen so far
  ids: np.ndarray         # [b, C] items that may still be in the best K (-1: none)
  upper: np.ndarray       # [b, C] their upper bounds (-inf: none)


class OracleBestPage:
  """The oracle's best page of K items over the whole corpus, for requests of one day.

  The best page holds the K items of highest true value on the objective (e.g. P(click at
  position 0) * P(conversion) * price), in decreasing order. Valuing all ~10^5 items exactly
  per request would cost ~0.2 s, so the corpus is screened in float32 chunks with bounds on
  the value that use the oracle's own formulas (data.world.oracle): the click logit with no repeat
  views (exact for items the user was not shown in the last 7 days, a lower bound otherwise)
  and `ConversionBounds`. An item whose upper bound falls below the K-th largest lower bound
  cannot be in the best K. Items the user was shown in the last 7 days (the only ones with
  views) are bounded again with their view counts. The survivors, ~K per request, are then
  valued exactly with `world.oracle`, so the result is the exact best page.
  """

  def __init__(self, world: "World", day: int, k: int, rank_by: str,
               block_pairs: int = 1 << 20) -> None:
    self.world, self.day, self.k, self.rank_by = world, day, k, rank_by
    self.block_pairs = max(block_pairs, k)
    self._truth = world.request_truth([day])
    prices = world.entities.item_price.astype(np.float32)
    self._prices = prices
    self._n_items = len(prices)
    # Per-item factors of the bounds: price (for GMV) and the float32 slack, folded together.
    scale = prices if rank_by == "ctcvr_gmv" else np.ones_like(prices)
    self._lower_scale = scale * np.float32(1 - _SCREEN_SLACK)
    self._upper_scale = scale * np.float32(1 + _SCREEN_SLACK)
    self._conversion = ConversionBounds()
    self._recent = RecentlyShown(world)
    intent = oracle_lib.purchase_intent(world.config, self._truth["request_id"],
                                        self._truth["user_id"])
    self._intent = None if intent is None else intent.astype(np.float32)

  def save(self) -> None:
    """Nothing to keep (see CachedBestPage)."""

  def top(self, request_ids: np.ndarray) -> np.ndarray:
    """The best page of each request, best first: item ids [n, K]."""
    rows = np.searchsorted(self._truth["request_id"], request_ids)
    screen = self._screen(rows)
    candidates = _unique_per_row(np.concatenate([screen.ids, self._recent_candidates(
        rows, screen.top_lower.min(axis=1, keepdims=True))], axis=1))
    valid = candidates >= 0
    values = oracle_item_values(self.world.oracle, request_ids, np.where(valid, candidates, 0),
                                self.rank_by, self._prices)
    values = np.where(valid, values, -np.inf)
    # Ties (equal values) go to the smaller item id, so the page is deterministic.
    order = np.lexsort((np.where(valid, candidates, np.iinfo(np.int64).max), -values), axis=1)
    return np.take_along_axis(candidates, order[:, :self.k], 1)

  def _recent_candidates(self, rows: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Recently shown items that may be in the best K once their 7-day views count: [n, F].

    The screen valued them without views (a lower bound only), so their bounds are redone
    here with the feature service's view counts."""
    t = self._truth
    users, timestamps = t["user_id"][rows], t["timestamp"][rows]
    items = self._recent.items(users, timestamps)
    real = items >= 0
    items = np.where(real, items, 0)
    views = self.world.features.views_7d(users[:, None], items, timestamps[:, None])
    lower, upper = self._value_bounds(rows, items, views.astype(np.float32))
    upper[~real] = -np.inf
    return _entries_above(upper, threshold, items)[0]

  def _screen(self, rows: np.ndarray) -> _Screen:
    n, n_items = len(rows), self._n_items
    screen = _Screen(np.full((n, self.k), -np.inf, np.float32), np.zeros((n, 0), np.int64),
                     np.zeros((n, 0), np.float32))
    width = max(self.k, self.block_pairs // max(n, 1))
    for start in range(0, n_items, width):
      items = np.arange(start, min(start + width, n_items))
      lower, upper = self._bounds(rows, items)
      _update_screen(screen, items, lower, upper, self.k)
    return screen

  def _bounds(self, rows: np.ndarray, items: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """float32 lower and upper bounds of each (request, item) value, views taken as 0."""
    return self._value_bounds(rows, items[None, :], np.float32(0.0))

  def _value_bounds(self, rows: np.ndarray, items: np.ndarray,
                    views: npt.ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Bounds of the value from the oracle's formulas, in float32: items [1, m] (a corpus
    chunk shared by every request) or [n, m]; request-side inputs are gathered from `rows`."""
    t = self._truth
    terms = truth.pair_terms(self.world.entities, t["user_id"][rows], items,
                             t["intent_category"][rows], t["intent_shop"][rows],
                             dtype=np.float32)
    click = oracle_lib.click_logit(self.world.config, views_7d=views, **terms)
    click *= np.float32(0.5)  # P(click at position 0) = sigmoid(logit), in place
    np.tanh(click, out=click)
    click += np.float32(1.0)
    click *= np.float32(0.5)
    lower_scale, upper_scale = self._lower_scale[items], self._upper_scale[items]
    if self.rank_by == "ctr":
      return click * lower_scale, click * upper_scale
    intent = None if self._intent is None else self._intent[rows][:, None]
    mean = oracle_lib.conversion_mean(**terms, bias=self.world.config.conversion_bias,
                                      purchase_intent=intent)
    conversion_lower, conversion_upper = self._conversion(mean)
    conversion_lower *= click
    conversion_lower *= lower_scale
    conversion_upper *= click
    conversion_upper *= upper_scale
    return conversion_lower, conversion_upper


class CachedBestPage:
  """`OracleBestPage` with its pages kept on disk for later replays.

  The best page depends only on the world, the day, K and the objective, not on the models, so
  the replays of many variants on one day (a comparison, the paper's online study) compute each
  page once. The file is named by those four and written atomically by `save`.
  """

  def __init__(self, oracle: OracleBestPage, cache_dir: str):
    self.oracle = oracle
    name = (f"best_pages_{oracle.world.world_hash[:16]}_day{oracle.day}_k{oracle.k}_"
            f"{oracle.rank_by}.npz")
    self.path = os.path.join(cache_dir, name)
    self._ids = np.zeros(0, np.int64)
    self._pages = np.zeros((0, oracle.k), np.int64)
    if os.path.exists(self.path):
      with np.load(self.path) as cached:
        self._ids, self._pages = cached["request_ids"], cached["pages"]
    self._new_ids: List[np.ndarray] = []
    self._new_pages: List[np.ndarray] = []

  def top(self, request_ids: np.ndarray) -> np.ndarray:
    request_ids = np.asarray(request_ids, np.int64)
    pos, hit = id_lookup.find_rows(self._ids, request_ids)
    pages = np.empty((len(request_ids), self.oracle.k), np.int64)
    pages[hit] = self._pages[pos[hit]]
    if not hit.all():
      pages[~hit] = self.oracle.top(request_ids[~hit])
      self._new_ids.append(request_ids[~hit])
      self._new_pages.append(pages[~hit])
    return pages

  def new_pages(self) -> Tuple[np.ndarray, np.ndarray]:
    """The pages computed since loading or saving: (request ids [n], pages [n, K])."""
    if not self._new_ids:
      return np.zeros(0, np.int64), np.zeros((0, self.oracle.k), np.int64)
    return np.concatenate(self._new_ids), np.concatenate(self._new_pages)

  def add(self, request_ids: np.ndarray, pages: np.ndarray) -> None:
    """Pages another process computed (a worker of the same replay), kept by the next save."""
    self._new_ids.append(np.asarray(request_ids, np.int64))
    self._new_pages.append(np.asarray(pages, np.int64))

  def save(self) -> None:
    """Adds the pages computed since loading to the cache file (atomically)."""
    if not self._new_ids:
      return
    ids = np.concatenate([self._ids] + self._new_ids)
    pages = np.concatenate([self._pages] + self._new_pages)
    ids, first = np.unique(ids, return_index=True)
    self._ids, self._pages = ids, pages[first]
    self._new_ids, self._new_pages = [], []
    def write(tmp: str) -> None:
      with open(tmp, "wb") as f:
        np.savez(f, request_ids=self._ids, pages=self._pages)
    files.write_with(self.path, write)


def _update_screen(screen: _Screen, items: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                   k: int) -> None:
  """Folds one corpus chunk into the screen: new threshold, then drop what falls below it."""
  chunk_top = lower if lower.shape[1] <= k else np.partition(lower, -k, axis=1)[:, -k:]
  pool = np.concatenate([screen.top_lower, chunk_top], axis=1)
  screen.top_lower = np.partition(pool, -k, axis=1)[:, -k:]
  threshold = screen.top_lower.min(axis=1, keepdims=True)
  new_ids, new_upper = _entries_above(upper, threshold, items)
  screen.ids, screen.upper = _entries_above(
      np.concatenate([screen.upper, new_upper], axis=1), threshold,
      np.concatenate([screen.ids, new_ids], axis=1))


def _entries_above(upper: np.ndarray, threshold: np.ndarray,
                   ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Per row, the ids whose upper bound reaches the row's threshold, and those bounds, padded
  to a common width with -1 / -inf. `ids` is [n, m], or [m] shared by every row."""
  rows, columns = np.nonzero(upper >= threshold)
  n = upper.shape[0]
  counts = np.bincount(rows, minlength=n)
  width = int(counts.max(initial=0))
  slot = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
  kept_ids = np.full((n, width), -1, np.int64)
  kept_upper = np.full((n, width), -np.inf, np.float32)
  kept_ids[rows, slot] = ids[columns] if ids.ndim == 1 else ids[rows, columns]
  kept_upper[rows, slot] = upper[rows, columns]
  return kept_ids, kept_upper


def _unique_per_row(ids: np.ndarray) -> np.ndarray:
  """Each row's distinct ids (>= 0), sorted, padded with -1 to a common width."""
  ids = np.sort(ids, axis=1)
  duplicate = np.zeros(ids.shape, bool)
  duplicate[:, 1:] = ids[:, 1:] == ids[:, :-1]
  ids = np.where(duplicate | (ids < 0), -1, ids)
  ids = -np.sort(-ids, axis=1)  # real ids first
  width = max(1, int((ids >= 0).sum(axis=1).max()))
  return ids[:, :width]


class RecentlyShown:
  """The items each user was shown shortly before a time (their 7-day views may be > 0)."""

  WINDOW = 7 * SECONDS_PER_DAY + 1  # a little wider than the view counter's 7 days

  def __init__(self, world: "World") -> None:
    shown = world.log_arrays(world.days, ["user_id", "item_id", "timestamp"])
    self._span = int(world.config.n_days + 1) * SECONDS_PER_DAY + 1
    keys = shown["user_id"].astype(np.int64) * self._span + shown["timestamp"]
    order = np.argsort(keys, kind="stable")
    self._keys, self._items = keys[order], shown["item_id"][order].astype(np.int64)

  def items(self, users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Items shown to users[i] in [timestamps[i] - WINDOW, timestamps[i]]: [n, F], -1 padded."""
    base = users.astype(np.int64) * self._span
    start = np.searchsorted(self._keys, base + np.maximum(timestamps - self.WINDOW, 0))
    end = np.searchsorted(self._keys, base + timestamps, side="right")
    counts = end - start
    width = max(1, int(counts.max(initial=0)))
    offsets = np.arange(width)[None, :]
    valid = offsets < counts[:, None]
    index = np.where(valid, start[:, None] + offsets, 0)
    return np.where(valid, self._items[index] if len(self._items) else 0, -1)
