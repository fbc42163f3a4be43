"""Sorted-id lookup and collision-free pair keys: how tables are joined by id without pandas.

Entity and request tables are kept sorted by id, so a lookup is one `searchsorted`. Pair keys
pack two non-negative ids into one int64 for set operations on (request, item) pairs; they
refuse ids that would not fit instead of wrapping around.
"""

from typing import Tuple, cast

import numpy as np


def find_rows(sorted_ids: np.ndarray, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(row of each id in the sorted `sorted_ids`, whether it is there).

  Rows of absent ids are meaningless. `ids` may have any shape.
  """
  ids = np.asarray(ids)
  if len(sorted_ids) == 0:
    return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
  rows = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
  return rows, sorted_ids[rows] == ids


def lookup_rows(sorted_ids: np.ndarray, ids: np.ndarray, what: str = "request_id") -> np.ndarray:
  """Row of each id in the sorted `sorted_ids`; raises ValueError naming an unknown id."""
  ids = np.asarray(ids)
  if len(sorted_ids) == 0:
    if ids.size:
      raise ValueError(f"unknown {what} {int(ids.reshape(-1)[0])}: the table is empty")
    return np.zeros(ids.shape, np.int64)
  rows, found = find_rows(sorted_ids, ids)
  if not np.all(found):
    raise ValueError(f"unknown {what} {int(ids[~found].reshape(-1)[0])}: not in this world")
  return rows


def dense_ranks(ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(sorted distinct ids, rank of each id among them): ids mapped to 0..n-1, order kept."""
  distinct, ranks = np.unique(np.asarray(ids), return_inverse=True)
  return distinct, ranks.reshape(np.shape(ids))


def pair_keys(first: np.ndarray, second: np.ndarray, second_span: int) -> np.ndarray:
  """One int64 key per (first, second) pair: first * second_span + second, checked.

  Both ids must be in [0, span); `first` should be a dense rank (see `dense_ranks`) when the
  raw ids are large (request ids carry the shard in their high bits).
  """
  first = np.asarray(first, np.int64)
  second = np.asarray(second, np.int64)
  if first.size and (first.min() < 0 or second.min() < 0 or second.max() >= second_span):
    raise ValueError("pair_keys: ids must be non-negative and below the span")
  if first.size and int(first.max()) > (np.iinfo(np.int64).max - second_span) // second_span:
    raise OverflowError(f"pair_keys: first id {int(first.max())} x span {second_span} "
                        "overflows int64; pass dense ranks")
  return cast(np.ndarray, first * np.int64(second_span) + second)
