"""The oracle's view of an evaluation: true probabilities, ceilings and eAUC on a real world."""

import numpy as np
import pytest

import data
from data.stats import headroom
from data.stats import metrics


@pytest.fixture(scope="module")
def eval_day(tiny_world_dir):
  world = data.load(tiny_world_dir)
  day = list(world.days)[-1]
  return world, world.log_arrays([day])


def test_true_click_probabilities_match_the_logged_click_rate(eval_day):
  world, arrays = eval_day
  p = headroom.true_probabilities(world, arrays, "click")
  clicks = arrays["click"].astype(float)
  standard_error = np.sqrt(np.sum(p * (1 - p))) / len(p)
  assert abs(p.mean() - clicks.mean()) < 4 * standard_error


def test_true_conversion_probabilities_match_the_logged_conversions_of_clicks(eval_day):
  world, arrays = eval_day
  clicked = {k: v[arrays["click"] > 0] for k, v in arrays.items()}
  p = headroom.true_probabilities(world, clicked, "conversion")
  standard_error = np.sqrt(np.sum(p * (1 - p))) / len(p)
  assert abs(p.mean() - clicked["conversion"].mean()) < 4 * standard_error


def test_the_ceiling_bounds_a_model_and_eauc_has_less_noise(eval_day):
  world, arrays = eval_day
  p = headroom.true_probabilities(world, arrays, "click")
  rng = np.random.default_rng(0)
  model = np.log(p) + rng.normal(0, 1.0, p.size)  # an imperfect model of the truth
  result = headroom.headroom_metrics(arrays["click"], model, p)
  assert result["ceiling_eauc"] > result["eauc"] > 0.5
  assert result["ceiling_auc"] > metrics.auc(arrays["click"], model)
  with pytest.raises(ValueError, match="no oracle probability"):
    headroom.true_probabilities(world, arrays, "gmv")
