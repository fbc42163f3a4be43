"""The privileged features carry information the serving features lack (tiny worlds).

Logistic regressions (numpy IRLS) with and without the privileged features: the cross
features help predict clicks, the post-click signals help predict conversion among clicks, and
noisier post-click signals help less. Mechanism checks run on the dense regime
(experiments/configs/world_dense.cfg), whose tiny world has hundreds of conversions; the
default, Taobao-calibrated regime, where about 1% of clicks convert, is checked on a tiny world
with more users (TEST_USERS), where the post-click signals stay informative.
"""

import numpy as np
import pytest

import data
from data.world.config import DENSE_KNOBS
from tests.test_world_calibration import TEST_USERS
from tests.test_world_helpers import cached_tiny_world
from tests.test_world_helpers import fitted_auc

SERVING_NUMERIC = ["item_price", "hist_len"]
SERVING_CATEGORICAL = ["user_power_level", "position"]
CROSS = ["cross_clicks_cate_24h", "cross_clicks_shop_24h", "cross_clicks_brand_24h",
         "cross_views_item_7d"]
POST_CLICK = ["dwell_seconds", "read_comments", "chatted_with_seller", "added_to_cart",
              "favorited"]


def _arrays(tmp_path_factory, **overrides):
  world = data.load(cached_tiny_world(tmp_path_factory, **overrides), verify=False)
  return world.log_arrays(world.days)


def _post_click_gap(arrays) -> float:
  clicked = arrays["click"] > 0
  without = fitted_auc(arrays, "conversion", SERVING_NUMERIC + CROSS, ["user_power_level"],
                       rows=clicked)
  with_post = fitted_auc(arrays, "conversion", SERVING_NUMERIC + CROSS + POST_CLICK,
                         ["user_power_level"], rows=clicked)
  return with_post - without


def _rates(arrays):
  return arrays["click"].mean(), arrays["conversion"].sum() / arrays["click"].sum()


def test_default_rates_are_taobaos_and_the_dense_regime_stays_dense(tmp_path_factory):
  ctr, cvr = _rates(_arrays(tmp_path_factory, n_users=TEST_USERS))
  assert 0.03 <= ctr <= 0.05 and 0.005 <= cvr <= 0.02, (ctr, cvr)
  ctr, cvr = _rates(_arrays(tmp_path_factory, **DENSE_KNOBS))
  assert 0.05 <= ctr <= 0.08 and 0.10 <= cvr <= 0.25, (ctr, cvr)


def test_cross_features_predict_clicks(tmp_path_factory):
  arrays = _arrays(tmp_path_factory)
  without = fitted_auc(arrays, "click", SERVING_NUMERIC, SERVING_CATEGORICAL)
  with_cross = fitted_auc(arrays, "click", SERVING_NUMERIC + CROSS, SERVING_CATEGORICAL)
  assert with_cross > without + 0.02, (without, with_cross)


def test_post_click_signals_predict_conversion(tmp_path_factory):
  gap = _post_click_gap(_arrays(tmp_path_factory, **DENSE_KNOBS))
  assert gap > 0.05, gap


def test_post_click_signals_predict_conversion_in_the_taobao_regime(tmp_path_factory):
  arrays = _arrays(tmp_path_factory, n_users=TEST_USERS)
  assert arrays["conversion"].sum() >= 100
  gap = _post_click_gap(arrays)
  assert gap > 0.08, gap


def test_noisier_post_click_signals_help_less(tmp_path_factory):
  clear = _post_click_gap(_arrays(tmp_path_factory, post_click_noise=0.5, **DENSE_KNOBS))
  noisy = _post_click_gap(_arrays(tmp_path_factory, post_click_noise=4.0, **DENSE_KNOBS))
  assert clear > noisy + 0.03, (clear, noisy)


def test_post_click_noise_leaves_clicks_and_conversions_unchanged(tmp_path_factory):
  clear = _arrays(tmp_path_factory, post_click_noise=0.5)
  noisy = _arrays(tmp_path_factory, post_click_noise=4.0)
  np.testing.assert_array_equal(clear["click"], noisy["click"])
  np.testing.assert_array_equal(clear["conversion"], noisy["conversion"])


def test_expensive_items_dwell_longer_but_convert_less(tmp_path_factory):
  arrays = _arrays(tmp_path_factory, **DENSE_KNOBS)
  clicked = arrays["click"] > 0
  price = arrays["item_price"][clicked]
  expensive = price > np.median(price)
  dwell, conversion = arrays["dwell_seconds"][clicked], arrays["conversion"][clicked]
  assert np.median(dwell[expensive]) > np.median(dwell[~expensive])
  assert conversion[expensive].mean() < conversion[~expensive].mean()


@pytest.mark.slow
def test_small_world_signal(tmp_path_factory):
  world_dir = str(tmp_path_factory.mktemp("small"))
  from data import generate
  generate.generate(world_dir, data.preset("small"))
  world = data.load(world_dir)
  arrays = world.log_arrays(world.days, SERVING_NUMERIC + SERVING_CATEGORICAL + CROSS
                            + POST_CLICK + ["click", "conversion"])
  ctr, cvr = _rates(arrays)  # the default (Taobao) regime's published ranges
  assert 0.03 <= ctr <= 0.05 and 0.005 <= cvr <= 0.02, (ctr, cvr)
  assert _post_click_gap(arrays) > 0.05
