"""The training stream gathers in TensorFlow the same seeded batches from exactly narrowed,
resident columns, and only the model's own columns."""

import numpy as np
import pytest
import tensorflow as tf

import data
from data.world import columns as columns_lib
from data.world import io
from data.world import schema as S
from models import distillation
from models import pipeline
from models import rankers
from stages import config as config_lib
from stages import training


@pytest.fixture(scope="module")
def world(tiny_world_dir):
  return data.load(tiny_world_dir, verify=False)


def test_narrowest_dtype_keeps_every_value_exactly():
  cases = [(np.array([0, 6], np.int64), np.int8), (np.array([-1, 1999], np.int64), np.int16),
           (np.array([0, 49_999], np.int64), np.int32), (np.array([0, 2 ** 40]), np.int64),
           (np.array([-1.0, 0.0, 1.0], np.float32), np.int8),
           (np.array([0.0, 300.0], np.float32), np.int16),
           (np.array([0.0, 0.5], np.float32), np.float32),
           (np.array([0.0, np.nan], np.float32), np.float32),
           (np.array([0.0, 1e6], np.float32), np.float32)]
  for values, expected in cases:
    narrow = columns_lib.narrowest_dtype(values)
    assert narrow == np.dtype(expected), (values, narrow)
    np.testing.assert_array_equal(values.astype(narrow).astype(values.dtype), values)


def test_narrow_log_arrays_hold_the_wide_values_in_fewer_bytes(world):
  columns = io.stage_columns(world.schema, "fine_cvr")
  wide = world.log_arrays(world.days[:3], columns)
  narrow = world.log_arrays(world.days[:3], columns, narrow=True)
  assert list(narrow) == list(wide)
  for name in columns:
    expanded = np.asarray(narrow[name])
    assert expanded.dtype == np.asarray(wide[name]).dtype, name
    np.testing.assert_array_equal(expanded, np.asarray(wide[name]))
  assert isinstance(narrow[S.CLICK], columns_lib.NarrowColumn)
  assert narrow[S.CLICK].values.dtype == np.int8
  assert isinstance(narrow["hist_category_ids"], io.RequestColumn)
  assert sum(v.nbytes for v in narrow.values()) < 0.5 * sum(v.nbytes for v in wide.values())


def test_rows_taken_from_narrow_columns_stay_narrow_and_aligned(world):
  arrays = world.log_arrays([world.days[0]], ["click", "user_age_bucket", "hist_len"],
                            narrow=True)
  clicked = io.take_rows(arrays, np.asarray(arrays["click"]) > 0)
  assert isinstance(clicked["user_age_bucket"], columns_lib.NarrowColumn)
  assert columns_lib.is_aligned(clicked["user_age_bucket"].values)
  assert columns_lib.is_aligned(clicked["hist_len"].rows)
  assert np.all(np.asarray(clicked["click"]) == 1.0)


def _reference_batch(expanded, order, b, batch_size):
  rows = np.sort(order[b * batch_size:(b + 1) * batch_size])
  return {k: v[rows] for k, v in expanded.items()}


@pytest.mark.parametrize("start", [0, 10, 13])  # 12 steps per epoch: 10 crosses one
def test_stream_yields_each_epochs_seeded_permutation_from_any_step(world, start):
  arrays = world.log_arrays(world.days[:2], io.stage_columns(world.schema, "fine_ctr"),
                            narrow=True)
  expanded = {k: np.asarray(v) for k, v in arrays.items()}
  n, batch_size, seed = len(expanded["click"]), 2048, 7
  dataset, steps = training.resumable_dataset(arrays, batch_size, seed, lambda: start)
  assert steps == -(-n // batch_size) == 12
  for step, batch in enumerate(dataset.take(4).as_numpy_iterator(), start):
    epoch, b = divmod(step, steps)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    expected = _reference_batch(expanded, order, b, batch_size)
    assert sorted(batch) == sorted(expected)
    for name, values in expected.items():
      assert batch[name].dtype == values.dtype, name
      np.testing.assert_array_equal(batch[name], values, err_msg=name)


def test_stream_gathers_only_the_models_own_columns(world):
  arrays = world.log_arrays([world.days[0]], io.stage_columns(world.schema, "fine_cvr"),
                            narrow=True)
  spec = distillation.DistillationSpec(teacher_kind="pfd", architecture=rankers.DNN,
                                       label="conversion")
  model = distillation.build_distillation(world.schema, "fine_cvr", spec)
  columns = training.model_columns(model, arrays)
  read = set(model.student.input_names) | set(model.teacher.input_names) | {"conversion"}
  assert set(columns) == read
  assert not {S.REQUEST_ID, S.DAY, S.POSITION, S.CLICK, S.GMV} & set(columns)
  dataset, _ = training.resumable_dataset(arrays, 64, 0, lambda: 0, columns=columns)
  assert set(dataset.element_spec) == read


def test_aligned_columns_become_tensors_without_a_copy():
  values = columns_lib.aligned_empty((1 << 18,), np.int32)
  values[:] = 1
  tensor = pipeline.resident_tensor(values)
  values[7] = 42  # the tensor reads the same memory
  assert int(tensor[7]) == 42
  unaligned = np.ones((1 << 18) + 1, np.int32)[1:]
  copied = pipeline.resident_tensor(unaligned)
  unaligned[7] = 42
  assert int(copied[7]) == 1


def test_appended_rows_keep_narrow_and_ragged_columns_exact(world):
  arrays = world.log_arrays([world.days[0]], ["click", "item_category", "hist_shop_ids"],
                            narrow=True)
  width = arrays["hist_shop_ids"].shape[1]
  big = np.iinfo(np.int16).max + 5  # wider than the narrowed tables hold
  extra = {"click": np.array([-1.0, -1.0], np.float32),
           "item_category": np.array([big, 0], np.int64),
           "hist_shop_ids": np.full((2, width), S.PAD_ID, np.int64)}
  extra["hist_shop_ids"][0, :3] = [big, 1, 2]
  out = io.append_rows(arrays, extra)
  for name in extra:
    np.testing.assert_array_equal(np.asarray(out[name]),
                                  np.concatenate([np.asarray(arrays[name]), extra[name]]))
  assert isinstance(out["hist_shop_ids"].table, columns_lib.RaggedTable)


def test_thread_counts_a_running_tensorflow_cannot_take_are_kept_with_a_warning(
    tiny_world_dir, tmp_path, caplog):
  """A long-lived worker's later trial asks for other thread counts than its runtime has: the
  run goes on with the old ones and says so (op determinism keeps its results the same)."""
  tf.constant(1.0) + 1.0  # the runtime is up: its thread pools are fixed
  running = tf.config.threading.get_inter_op_parallelism_threads()
  config = config_lib.FineConfig(world_dir=tiny_world_dir, model_dir=str(tmp_path),
                                 inter_op_threads=running + 3)
  training.configure_threads(config)
  assert tf.config.threading.get_inter_op_parallelism_threads() == running
  assert "--inter_op_threads" in caplog.text and "not applied" in caplog.text


def test_a_behaviour_column_with_every_row_empty_gathers_to_padding():
  """A log without any behaviour history (an ingested source: the aliccp fixture) keeps an
  empty ragged table; its batches are all padding, not an out-of-range gather."""
  width = 4
  table = columns_lib.RaggedTable.from_dense(np.full((3, width), S.PAD_ID, np.int64), S.PAD_ID)
  assert table.values.size == 0
  rows = np.array([0, 0, 1, 2, 2], np.int64)
  column = columns_lib.RequestColumn(table, rows, np.int64)
  resident = pipeline.resident_columns({"hist_shop_ids": column})
  batch = pipeline.gather_rows(resident, tf.constant([4, 0, 2], tf.int64))
  np.testing.assert_array_equal(batch["hist_shop_ids"].numpy(),
                                np.full((3, width), S.PAD_ID, np.int64))
