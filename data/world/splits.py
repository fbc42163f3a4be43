"""Held-out validation rows carved out of the training days, by whole requests.

Early stopping needs rows the optimiser never sees but that come from the training period
(the eval day stays untouched for the final figures). Validation takes a seeded share of the
requests of the LAST training day (by default), whole requests at a time (a request's
impressions share a user and a moment, so splitting one would leak), which keeps it closest in
time to the eval day and works with a single training day. A sparse label (conversions: about
1% of clicks) can take the share from the last N days, or from every training day, so that
the held-out rows hold enough positives for their AUC to mean something.
"""

from typing import Dict, Tuple, cast

import numpy as np

from data.world import io

Arrays = Dict[str, np.ndarray]


def validation_mask(request_ids: np.ndarray, days: np.ndarray, fraction: float,
                    seed: int, last_days: int = 1) -> np.ndarray:
  """Bool mask of the rows whose request is among the held-out share of the requests of the
  last `last_days` training days (0: every training day)."""
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
  if last_days < 0:
    raise ValueError(f"last_days must be >= 0, got {last_days}")
  request_ids, days = np.asarray(request_ids), np.asarray(days)
  if fraction == 0.0 or request_ids.size == 0:
    return np.zeros(request_ids.shape, bool)
  distinct = np.unique(days)
  first = distinct[0] if last_days == 0 else distinct[-min(last_days, distinct.size)]
  last = days >= first
  requests = np.unique(request_ids[last])
  n_held = max(1, int(round(fraction * requests.size)))
  held = np.random.default_rng([seed, 0x5A11D]).choice(requests, n_held, replace=False)
  return cast(np.ndarray, last & np.isin(request_ids, held))


def split_validation(arrays: Arrays, fraction: float, seed: int) -> Tuple[Arrays, Arrays]:
  """(training rows, validation rows) of `arrays`, which must hold request_id and day."""
  mask = validation_mask(arrays["request_id"], arrays["day"], fraction, seed)
  keep = ~mask
  return io.take_rows(arrays, keep), io.take_rows(arrays, mask)
