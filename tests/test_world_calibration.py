"""The Taobao-calibrated regime (the default; experiments/configs/world_taobao.cfg names it) and
its purchase intent.

Checked at the level of definitions, on a world of tiny entity sizes with more users (so that
conversions, about 1% of clicks, number in the hundreds):
  - its rates fall in the published ranges (docs/world.md): 3-5% CTR per impression, 0.5-2%
    of clicks convert, carts and favourites each at least twice as frequent as purchases;
  - the oracle's P(convert | click) is exact for the simulated clicks, the request's purchase
    intent included;
  - the post-click signals reveal a purchase intent that lasts: a user's dwell on early days
    predicts their intent on later days when part of it is a user trait;
  - the dense regime (experiments/configs/world_dense.cfg) is the world generated before the
    knobs existed, byte for byte, and manifests of that time still load as it.
"""

import dataclasses
import os

import numpy as np
import pytest

import data
from data.plumbing import files
from data.world import io
from data.world import oracle as O
from data.world.config import DENSE_KNOBS
from data.world.config import WorldConfig
from tests.test_world_helpers import cached_tiny_world

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "experiments", "configs")
# world_hash of `python -m data.generate --preset=tiny --seed=0`, recorded on main before the
# calibration knobs existed, when the dense regime was the default and manifests left the knobs
# out (the small preset's was 7acffe6faf98f512cbc0f34ce8d1047af09e19e3006e29f15b045e40d624bce9).
DENSE_TINY_WORLD_HASH = "9c498f687aa9e150c28cf488e24277727edd915abfcdf617bfdd8edef6b13f29"
TEST_USERS = 4_000
KNOBS = ("click_bias", "conversion_bias", "cart_shift", "favorite_shift", "purchase_intent_sd",
         "purchase_intent_user_share")


def flagfile_knobs(name: str) -> dict:
  """The WorldConfig overrides of a world flagfile under experiments/configs/."""
  knobs = {}
  with open(os.path.join(CONFIGS, name)) as f:
    for line in f:
      line = line.strip()
      if line and not line.startswith("#"):
        flag, value = line[2:].split("=", 1)
        knobs[flag] = float(value)
  return knobs


def _world(tmp_path_factory, **overrides):
  return data.load(cached_tiny_world(tmp_path_factory, n_users=TEST_USERS, **overrides),
                   verify=False)


@pytest.fixture(scope="module")
def taobao(tmp_path_factory):
  world = _world(tmp_path_factory)
  arrays = world.log_arrays(world.days, ["request_id", "user_id", "item_id", "day", "click",
                                         "conversion", "added_to_cart", "favorited",
                                         "dwell_seconds"])
  return world, arrays


def _intent(world, arrays, rows) -> np.ndarray:
  """a_r (standard normal) of the requests of `rows`."""
  c = world.config
  return O.purchase_intent(c, arrays["request_id"][rows],
                           arrays["user_id"][rows]) / c.purchase_intent_sd


def test_dense_flagfile_gives_the_pre_calibration_world_byte_for_byte(tmp_path_factory):
  world_dir = cached_tiny_world(tmp_path_factory, **flagfile_knobs("world_dense.cfg"))
  manifest = files.read_json(os.path.join(world_dir, io.MANIFEST))
  # That era's manifest: the same files, the knobs left out of the config.
  old_config = {k: v for k, v in manifest["config"].items() if k not in KNOBS}
  assert io.world_hash(old_config, manifest["files"]) == DENSE_TINY_WORLD_HASH


def test_flagfiles_name_the_two_regimes():
  dense, taobao = flagfile_knobs("world_dense.cfg"), flagfile_knobs("world_taobao.cfg")
  assert sorted(dense) == sorted(taobao) == sorted(KNOBS)
  assert dense == DENSE_KNOBS
  assert data.preset("tiny", **taobao) == data.preset("tiny")  # calibrated is the default
  assert data.preset("small", **taobao) == data.preset("small")
  assert data.preset("medium", **taobao) == data.preset("medium")


def test_manifests_record_every_knob_and_old_ones_load_as_dense():
  values = data.preset("tiny").to_dict()
  assert set(KNOBS) <= set(values)
  assert WorldConfig.from_dict(values) == data.preset("tiny")
  old = {k: v for k, v in data.preset("tiny").to_dict().items() if k not in KNOBS}
  assert WorldConfig.from_dict(old) == data.preset("tiny", **DENSE_KNOBS)
  partly = {**old, "conversion_bias": -6.5}
  assert WorldConfig.from_dict(partly) == data.preset("tiny", **{**DENSE_KNOBS,
                                                                 "conversion_bias": -6.5})


def test_knobs_out_of_range_are_refused():
  with pytest.raises(ValueError, match="purchase_intent_sd"):
    data.preset("tiny", purchase_intent_sd=-1.0)
  with pytest.raises(ValueError, match="purchase_intent_user_share"):
    data.preset("tiny", purchase_intent_user_share=1.5)


def test_taobao_click_rate_per_impression_is_3_to_5_percent(taobao):
  _, arrays = taobao
  assert 0.03 <= arrays["click"].mean() <= 0.05, arrays["click"].mean()


def test_taobao_conversions_are_half_to_two_percent_of_clicks(taobao):
  world, arrays = taobao
  clicked = arrays["click"] > 0
  expected = world.oracle.p_convert(arrays["request_id"][clicked], arrays["item_id"][clicked])
  assert 0.005 <= expected.mean() <= 0.02, expected.mean()
  assert 0.005 <= arrays["conversion"][clicked].mean() <= 0.02


def test_taobao_carts_and_favourites_are_at_least_twice_purchases(taobao):
  _, arrays = taobao
  purchases = arrays["conversion"].sum()
  assert purchases >= 100, purchases
  assert arrays["added_to_cart"].sum() >= 2 * purchases
  assert arrays["favorited"].sum() >= 2 * purchases


def test_simulated_conversions_match_the_oracle_given_the_purchase_intent(taobao):
  world, arrays = taobao
  clicked = np.nonzero(arrays["click"] > 0)[0]
  p = world.oracle.p_convert(arrays["request_id"][clicked], arrays["item_id"][clicked])
  converted = arrays["conversion"][clicked]
  high = _intent(world, arrays, clicked) > 0
  assert p[high].mean() > 2 * p[~high].mean()  # the oracle sees the intent ...
  for rows in (np.ones(len(p), bool), high, ~high):  # ... and is right on either side
    error = converted[rows].sum() - p[rows].sum()
    assert abs(error) < 4 * np.sqrt((p[rows] * (1 - p[rows])).sum()), (rows.sum(), error)


def test_oracle_conversion_mean_is_the_intent_free_mean_plus_the_intent(taobao):
  world, arrays = taobao
  rows = np.nonzero(arrays["click"] > 0)[0][:500]
  requests, items = arrays["request_id"][rows], arrays["item_id"][rows]
  without = O.Oracle(dataclasses.replace(world.config, purchase_intent_sd=0.0),
                     world.entities, world.request_truth(), world.features)
  intent = O.purchase_intent(world.config, requests, arrays["user_id"][rows])
  np.testing.assert_allclose(world.oracle.conversion_mean(requests, items),
                             without.conversion_mean(requests, items) + intent, atol=1e-12)


def test_post_click_signals_rise_with_the_requests_purchase_intent(taobao):
  world, arrays = taobao
  clicked = np.nonzero(arrays["click"] > 0)[0]
  intent = _intent(world, arrays, clicked)
  dwell = np.log(arrays["dwell_seconds"][clicked])
  assert np.corrcoef(intent, dwell)[0, 1] > 0.1
  cart = arrays["added_to_cart"][clicked] > 0
  assert intent[cart].mean() > intent[~cart].mean() + 0.3


def _early_dwell_vs_late_intent(world, arrays) -> float:
  """Correlation over users of mean log dwell (days 1-2) and mean intent of days 3-4."""
  early = np.nonzero((arrays["click"] > 0) & (arrays["day"] <= 2))[0]
  late = np.nonzero(arrays["day"] >= 3)[0]
  n = world.config.n_users
  dwell = np.bincount(arrays["user_id"][early], np.log(arrays["dwell_seconds"][early]), n)
  clicks = np.bincount(arrays["user_id"][early], minlength=n)
  intent = np.bincount(arrays["user_id"][late], _intent(world, arrays, late), n)
  requests = np.bincount(arrays["user_id"][late], minlength=n)
  users = (clicks > 0) & (requests > 0)
  return np.corrcoef(dwell[users] / clicks[users], intent[users] / requests[users])[0, 1]


def test_post_click_signals_reveal_the_users_later_purchase_intent(tmp_path_factory, taobao):
  persistent = _early_dwell_vs_late_intent(*taobao)
  fresh_world = _world(tmp_path_factory, purchase_intent_user_share=0.0)
  fresh = _early_dwell_vs_late_intent(fresh_world, fresh_world.log_arrays(
      fresh_world.days, ["request_id", "user_id", "day", "click", "dwell_seconds"]))
  assert persistent > 0.2, persistent
  assert abs(fresh) < 0.1, fresh


def test_hashed_normals_are_standard_and_depend_only_on_the_key():
  keys = np.arange(200_000, dtype=np.int64) * 7919 + (1 << 40)
  draws = O.hashed_normals(3, 1, keys)
  assert abs(draws.mean()) < 0.01 and abs(draws.std() - 1) < 0.01
  assert abs(np.mean(draws > 1.96) - 0.025) < 0.002
  subset = np.array([5, 17, 3])
  np.testing.assert_array_equal(O.hashed_normals(3, 1, keys[subset]), draws[subset])
  assert abs(np.corrcoef(draws, O.hashed_normals(3, 2, keys))[0, 1]) < 0.01
  assert abs(np.corrcoef(draws, O.hashed_normals(4, 1, keys))[0, 1]) < 0.01
