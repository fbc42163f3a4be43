"""The per-pair inputs of the world's click and conversion models, gathered in one place.

The generator (world.py, one row per impression), the `Oracle` (oracle.py, [n, k] item lists
per request) and the oracle's best-page screen (best_page.py, float32 chunks of the corpus)
all feed `oracle.click_logit` and `oracle.conversion_mean` with the same terms: the taste dot
product, whether the item matches the request's intent category and shop, the item's quality
and log price, and the user's price sensitivity. Gathering them here, once, means the logs and
the oracle cannot drift apart.
"""

from typing import TYPE_CHECKING, Callable, Dict

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # simulation imports this module
  from data.world.simulation import Entities


def pair_terms(entities: "Entities", users: np.ndarray, items: np.ndarray,
               intent_category: np.ndarray, intent_shop: np.ndarray,
               dtype: npt.DTypeLike = np.float64) -> Dict[str, np.ndarray]:
  """Keyword arguments of `oracle.click_logit` (minus config, views) and `conversion_mean`.

  Args:
    entities: world.Entities (the hidden taste, quality, price sensitivity live there).
    users, intent_category, intent_shop: int[n], one per row.
    items: int[n] (one item per row: impressions), int[n, k] (k items per row) or int[1, m]
      (the same m items for every row: a chunk of the corpus).
    dtype: float64 for the logs and the oracle; float32 for the best-page screen.
  Returns:
    taste_dot, same_category, same_shop, quality, log_price, price_sensitivity, shaped like
    `items` (or broadcastable to [n, m]); the two intent matches are bool for float64 (exact
    in any sum) and `dtype` otherwise (so float32 arithmetic stays float32).
  """
  users = np.asarray(users)
  items = np.asarray(items)
  user_taste = entities.user_taste[users].astype(dtype)
  per_row: Callable[[np.ndarray], np.ndarray] = (
      (lambda values: values) if items.ndim == 1 else (lambda values: values[:, None]))
  if items.ndim == 1:
    taste_dot = np.einsum("nd,nd->n", user_taste, entities.item_taste[items].astype(dtype))
  elif items.shape[0] == 1 and len(users) != 1:
    taste_dot = user_taste @ entities.item_taste[items[0]].astype(dtype).T
  else:
    taste_dot = np.einsum("nd,nkd->nk", user_taste, entities.item_taste[items].astype(dtype))
  same_category = entities.item_category[items] == per_row(np.asarray(intent_category))
  same_shop = entities.item_shop[items] == per_row(np.asarray(intent_shop))
  if dtype != np.float64:
    same_category, same_shop = same_category.astype(dtype), same_shop.astype(dtype)
  return dict(taste_dot=taste_dot, same_category=same_category, same_shop=same_shop,
              quality=entities.item_quality[items].astype(dtype),
              log_price=np.log(entities.item_price[items].astype(np.float64)).astype(dtype),
              price_sensitivity=per_row(entities.user_price_sensitivity[users].astype(dtype)))
