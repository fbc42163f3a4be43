"""Behaviour sequences stay one row per request in memory and expand per batch to the same rows."""

import numpy as np
import pytest

import data
from data.world import io
from data.world import schema as S
from data.world import splits
from models import pipeline
from stages import training


@pytest.fixture(scope="module")
def world(tiny_world_dir):
  return data.load(tiny_world_dir, verify=False)


def _joined_by_pandas(world, day):
  """The per-impression behaviour sequences, joined the slow and obvious way."""
  logs = world.logs([day], [S.REQUEST_ID])
  requests = world.requests([day]).set_index(S.REQUEST_ID)
  joined = requests.loc[logs[S.REQUEST_ID]]
  return {name: np.stack(joined[name].to_numpy()) if name != "hist_len"
          else joined[name].to_numpy() for name in S.BEHAVIOUR_FEATURES}


def test_sequences_are_request_level_and_expand_to_the_joined_rows(world):
  day = world.days[0]
  arrays = world.log_arrays([day])
  expected = _joined_by_pandas(world, day)
  n_requests = world.manifest["row_counts"][str(day)]["requests"]
  for name in S.BEHAVIOUR_FEATURES:
    column = arrays[name]
    assert isinstance(column, io.RequestColumn)
    assert len(column.table) == n_requests < len(column)
    full = np.asarray(column)
    assert full.dtype == np.dtype(world.schema[name].dtype)
    np.testing.assert_array_equal(full, expected[name])
    rows = np.array([5, 0, len(column) - 1])
    np.testing.assert_array_equal(column[rows], expected[name][rows])
    np.testing.assert_array_equal(column[2:7], expected[name][2:7])
  assert arrays["hist_item_ids"].table.dtype == np.int32  # vocabulary fits


def test_row_selections_stay_request_level(world):
  arrays = world.log_arrays([world.days[0]])
  clicked = pipeline.take_rows(arrays, arrays["click"] > 0)
  assert isinstance(clicked["hist_item_ids"], io.RequestColumn)
  np.testing.assert_array_equal(np.asarray(clicked["hist_item_ids"]),
                                np.asarray(arrays["hist_item_ids"])[arrays["click"] > 0])
  train, held = splits.split_validation(arrays, 0.25, seed=0)
  assert isinstance(held["hist_shop_ids"], io.RequestColumn)
  assert len(train["hist_shop_ids"]) + len(held["hist_shop_ids"]) == len(arrays["click"])


def test_appended_rows_become_new_request_rows(world):
  arrays = world.log_arrays([world.days[0]], ["click", "hist_item_ids"])
  extra = {"click": np.array([-1.0, -1.0], np.float32),
           "hist_item_ids": np.arange(2 * arrays["hist_item_ids"].shape[1]).reshape(2, -1)}
  out = io.append_rows(arrays, extra)
  np.testing.assert_array_equal(np.asarray(out["hist_item_ids"]),
                                np.concatenate([np.asarray(arrays["hist_item_ids"]),
                                                extra["hist_item_ids"]]))
  assert len(out["click"]) == len(arrays["click"]) + 2


def test_dataset_batches_match_the_expanded_arrays(world):
  arrays = world.log_arrays([world.days[0]], io.stage_columns(world.schema, "fine_ctr"))
  expanded = {k: np.asarray(v) for k, v in arrays.items()}
  lazy = list(pipeline.make_dataset(arrays, 512, seed=3).take(3).as_numpy_iterator())
  eager = list(pipeline.make_dataset(expanded, 512, seed=3).take(3).as_numpy_iterator())
  for a, b in zip(lazy, eager):
    assert sorted(a) == sorted(b)
    for name in a:
      assert a[name].dtype == b[name].dtype
      np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("stage", ["retrieval", "coarse", "fine_ctr", "fine_cvr"])
def test_stage_columns_hold_every_feature_of_its_student_and_teacher(world, stage):
  columns = set(io.stage_columns(world.schema, stage))
  for role in (S.STUDENT, S.TEACHER):
    assert {f.name for f in world.schema.features_for(stage, role)} <= columns
  assert {S.REQUEST_ID, S.DAY, S.USER_ID, S.ITEM_ID, *S.LABELS} <= columns
  assert columns < set(io.log_columns(world.schema)) | set(S.BEHAVIOUR_FEATURES)


def test_training_stream_batches_match_the_expanded_arrays(world):
  arrays = world.log_arrays([world.days[0]], io.stage_columns(world.schema, "fine_cvr"))
  expanded = {k: np.asarray(v) for k, v in arrays.items()}
  lazy, steps = training.resumable_dataset(arrays, 256, seed=1, start_step=lambda: 3)
  eager, _ = training.resumable_dataset(expanded, 256, seed=1, start_step=lambda: 3)
  for a, b in zip(lazy.take(steps).as_numpy_iterator(), eager.take(steps).as_numpy_iterator()):
    for name in b:
      assert a[name].dtype == b[name].dtype
      np.testing.assert_array_equal(a[name], b[name])
