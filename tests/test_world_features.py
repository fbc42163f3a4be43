"""Point-in-time correctness, the FeatureService, the oracle and the loader's arrays (tiny)."""

import collections

import numpy as np
import pytest

import data
from data.world import io
from data.world import schema as S
from data.world.config import SECONDS_PER_DAY
from tests.test_world_helpers import cached_tiny_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  return data.load(cached_tiny_world(tmp_path_factory))


@pytest.fixture(scope="module")
def arrays(world):
  return world.log_arrays(world.days)


def _brute_force(world, arrays):
  """Recomputes every cross and history feature with plain Python loops over the logs."""
  items = world.items
  category, shop, brand = (items[c].to_numpy() for c in ("item_category", "item_shop",
                                                          "item_brand"))
  by_user = collections.defaultdict(list)  # user -> [(ts, position, item, clicked)]
  for user, ts, pos, item, click in zip(arrays["user_id"], arrays["timestamp"],
                                        arrays["position"], arrays["item_id"], arrays["click"]):
    by_user[int(user)].append((int(ts), int(pos), int(item), bool(click)))
  out = {name: np.zeros(len(arrays["item_id"])) for name in
         ("cross_clicks_cate_24h", "cross_clicks_shop_24h", "cross_clicks_brand_24h",
          "cross_views_item_7d", "hist_len")}
  out["hist_item_ids"] = np.full((len(arrays["item_id"]), world.config.history_len), -1)
  cache = {}
  for row in range(len(arrays["item_id"])):
    user, t, item = int(arrays["user_id"][row]), int(arrays["timestamp"][row]), \
        int(arrays["item_id"][row])
    if (user, t) not in cache:
      events = by_user[user]
      views = collections.Counter(e[2] for e in events if t - 7 * SECONDS_PER_DAY <= e[0] < t)
      recent = [e[2] for e in events if e[3] and t - SECONDS_PER_DAY <= e[0] < t]
      history = sorted((e for e in events if e[3] and e[0] < t), reverse=True)
      cache[(user, t)] = (views, collections.Counter(category[i] for i in recent),
                          collections.Counter(shop[i] for i in recent),
                          collections.Counter(brand[i] for i in recent),
                          [e[2] for e in history[:world.config.history_len]])
    views, by_cate, by_shop, by_brand, history = cache[(user, t)]
    out["cross_views_item_7d"][row] = views[item]
    out["cross_clicks_cate_24h"][row] = by_cate[category[item]]
    out["cross_clicks_shop_24h"][row] = by_shop[shop[item]]
    out["cross_clicks_brand_24h"][row] = by_brand[brand[item]]
    out["hist_len"][row] = len(history)
    out["hist_item_ids"][row, :len(history)] = history
  return out


def test_logged_features_are_point_in_time(world, arrays):
  expected = _brute_force(world, arrays)
  for name, values in expected.items():
    np.testing.assert_array_equal(arrays[name], values, err_msg=name)
  items = world.items
  hist = arrays["hist_item_ids"]
  valid = hist != S.PAD_ID
  cats = items["item_category"].to_numpy()[np.where(valid, hist, 0)]
  np.testing.assert_array_equal(arrays["hist_category_ids"], np.where(valid, cats, S.PAD_ID))
  shops = items["item_shop"].to_numpy()[np.where(valid, hist, 0)]
  np.testing.assert_array_equal(arrays["hist_shop_ids"], np.where(valid, shops, S.PAD_ID))


def test_feature_service_reproduces_logged_columns(world, arrays):
  page = world.config.page_size
  request_ids = arrays["request_id"].reshape(-1, page)[:, 0]
  computed = world.features.compute(request_ids, arrays["item_id"].reshape(-1, page))
  expected = {f.name for f in world.schema.with_availability({S.SERVING, S.PRIVILEGED_CROSS})}
  assert set(computed) == expected
  for name, values in computed.items():
    logged = arrays[name].reshape(len(request_ids), page, *arrays[name].shape[1:])
    if world.schema[name].entity in (S.USER, S.CONTEXT):
      logged = logged[:, 0]
    assert values.dtype == world.schema[name].dtype, name
    np.testing.assert_array_equal(values, logged, err_msg=name)


def test_feature_service_scores_unlogged_candidates(world):
  requests = world.request_arrays(world.days)
  rng = np.random.default_rng(0)
  request_ids = requests["request_id"][:50]
  items = rng.integers(0, world.config.n_items, (50, 30))
  out = world.features.compute(request_ids, items)
  assert out["hist_item_ids"].shape == (50, world.config.history_len)
  assert out["user_id"].shape == (50,) and out["cross_views_item_7d"].shape == (50, 30)
  with pytest.raises(ValueError, match="unknown request_id"):
    world.features.compute(np.array([-7]), items[:1])


def test_logged_outcomes_follow_the_oracle(world, arrays):
  page = world.config.page_size
  request_ids = arrays["request_id"].reshape(-1, page)[:, 0]
  items = arrays["item_id"].reshape(-1, page)
  p_click = world.oracle.p_click(request_ids, items, np.arange(page)).reshape(-1)
  se = np.sqrt(np.sum(p_click * (1 - p_click))) / len(p_click)
  assert abs(arrays["click"].mean() - p_click.mean()) < 4 * se
  clicked = arrays["click"] > 0
  p_convert = world.oracle.p_convert(request_ids, items).reshape(-1)[clicked]
  se = np.sqrt(np.sum(p_convert * (1 - p_convert))) / len(p_convert)
  assert abs(arrays["conversion"][clicked].mean() - p_convert.mean()) < 4 * se
  assert np.all(arrays["conversion"][~clicked] == 0)
  assert np.all(arrays["dwell_seconds"][~clicked] == 0)
  np.testing.assert_allclose(arrays["gmv"], arrays["conversion"] * arrays["item_price"])


def test_oracle_position_shapes(world, arrays):
  request_ids = arrays["request_id"][:20:10]
  items = arrays["item_id"][:20].reshape(2, 10)
  base = world.oracle.p_click(request_ids, items)
  by_k = world.oracle.p_click(request_ids, items, np.arange(10))
  by_nk = world.oracle.p_click(request_ids, items, np.tile(np.arange(10), (2, 1)))
  np.testing.assert_allclose(by_k, by_nk)
  np.testing.assert_allclose(by_k[:, 0], base[:, 0])
  assert np.all(by_k[:, 1:] < base[:, 1:])
  assert world.oracle.p_convert(request_ids, items).shape == (2, 10)


def test_loader_arrays_and_frames(world):
  logs = world.logs(1)
  assert list(logs.columns) == io.log_columns(world.schema)
  assert set(world.logs([1, 2])["day"]) == {1, 2}
  arrays = world.log_arrays(2, columns=["item_id", "hist_item_ids", "click", "item_price"])
  assert arrays["item_id"].dtype == np.int64 and arrays["click"].dtype == np.float32
  assert arrays["item_price"].dtype == np.float32
  assert arrays["hist_item_ids"].shape == (len(arrays["item_id"]), world.config.history_len)
  requests = world.requests(3)
  assert len(requests) == world.manifest["row_counts"]["3"]["requests"]
  assert (world.users["user_id"].to_numpy() == np.arange(world.config.n_users)).all()
  assert (world.items["item_id"].to_numpy() == np.arange(world.config.n_items)).all()
  with pytest.raises(ValueError, match="days \\[99\\]"):
    world.logs(99)


def test_event_counter_compressed_keys_match_direct_keys():
  from data.world.features import EventCounter
  rng = np.random.default_rng(0)
  keys, times = rng.integers(0, 50, 2000), rng.integers(0, 1000, 2000)
  direct = EventCounter(keys, times, n_keys=50, span=1001)
  compressed = EventCounter(keys, times, n_keys=2 ** 60, span=1001)  # forces key ranks
  query_keys, query_times = rng.integers(0, 60, (30, 7)), rng.integers(0, 1000, (30, 1))
  expected = np.array([[np.sum((keys == k) & (times >= max(t - 100, 0)) & (times < t))
                        for k, t in zip(row, np.broadcast_to(ts, row.shape))]
                       for row, ts in zip(query_keys, query_times)])
  np.testing.assert_array_equal(direct.count(query_keys, query_times, 100), expected)
  np.testing.assert_array_equal(compressed.count(query_keys, query_times, 100), expected)
