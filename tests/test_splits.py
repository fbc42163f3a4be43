"""Validation rows: whole requests of the last training day, seeded, never the others."""

import numpy as np
import pytest

from data.world import splits


def _arrays():
  request_id = np.repeat(np.arange(40), 5)
  day = np.where(request_id < 20, 1, 2)
  return {"request_id": request_id, "day": day, "click": np.arange(200) % 2}


def test_validation_takes_whole_requests_of_the_last_day():
  train, validation = splits.split_validation(_arrays(), 0.25, seed=0)
  assert set(validation["day"]) == {2}
  assert len(np.unique(validation["request_id"])) == 5
  assert not set(validation["request_id"]) & set(train["request_id"])
  assert len(train["click"]) + len(validation["click"]) == 200


def test_validation_is_seeded_and_zero_fraction_holds_nothing_out():
  a = splits.split_validation(_arrays(), 0.25, seed=1)[1]["request_id"]
  b = splits.split_validation(_arrays(), 0.25, seed=1)[1]["request_id"]
  np.testing.assert_array_equal(a, b)
  assert len(splits.split_validation(_arrays(), 0.0, seed=1)[1]["request_id"]) == 0
  with pytest.raises(ValueError, match="fraction"):
    splits.validation_mask(np.arange(3), np.ones(3), 1.0, 0)


def test_a_sparse_label_can_validate_on_every_training_day():
  arrays = _arrays()
  every = splits.validation_mask(arrays["request_id"], arrays["day"], 0.25, 0, last_days=0)
  assert set(arrays["day"][every]) == {1, 2}
  assert len(np.unique(arrays["request_id"][every])) == 10  # a quarter of all 40 requests
  last = splits.validation_mask(arrays["request_id"], arrays["day"], 0.25, 0, last_days=1)
  np.testing.assert_array_equal(last, splits.validation_mask(arrays["request_id"],
                                                             arrays["day"], 0.25, 0))


def test_the_validation_days_setting_leaves_earlier_reuse_keys_alone():
  from stages import config as config_lib
  base = dict(world_dir="W", model_dir="M")
  assert "validation_days" not in config_lib.key_values(config_lib.TrainConfig(**base))
  assert config_lib.key_values(config_lib.TrainConfig(validation_days=0, **base))[
      "validation_days"] == 0
