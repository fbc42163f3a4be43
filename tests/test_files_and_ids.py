"""The shared file writers and id lookups: atomic, strict, and loud on bad input."""

import json
import math
import os

import numpy as np
import pytest

from data.plumbing import files
from data.world import ids


def test_write_json_is_strict_and_leaves_no_temporary_file(tmp_path):
  path = tmp_path / "out" / "metrics.json"
  files.write_json(str(path), {"auc": np.float32(0.5), "nan": math.nan, "n": np.int64(3),
                               "values": np.arange(2)})
  assert json.loads(path.read_text()) == {"auc": 0.5, "nan": None, "n": 3, "values": [0, 1]}
  assert os.listdir(path.parent) == ["metrics.json"]


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
  path = tmp_path / "table.json"
  files.write_json(str(path), {"a": 1})

  def explode(tmp):
    open(tmp, "w").write("partial")
    raise RuntimeError("disk full")
  with pytest.raises(RuntimeError):
    files.write_with(str(path), explode)
  assert json.loads(path.read_text()) == {"a": 1}
  assert os.listdir(tmp_path) == ["table.json"]


def test_read_json_names_a_damaged_file(tmp_path):
  path = tmp_path / "summary.json"
  path.write_text("{not json")
  with pytest.raises(files.UnreadableFileError, match="summary.json is not valid JSON"):
    files.read_json(str(path))


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
  target = tmp_path / "saved_model"
  with files.atomic_directory(str(target)) as tmp:
    open(os.path.join(tmp, "a"), "w").write("1")
  assert os.listdir(target) == ["a"]
  with pytest.raises(RuntimeError):
    with files.atomic_directory(str(target)) as tmp:
      open(os.path.join(tmp, "b"), "w").write("2")
      raise RuntimeError("killed")
  assert os.listdir(target) == ["a"]
  assert sorted(os.listdir(tmp_path)) == ["saved_model"]


def test_find_rows_and_lookup_rows():
  sorted_ids = np.array([2, 5, 9])
  rows, found = ids.find_rows(sorted_ids, np.array([[5, 3], [9, 2]]))
  np.testing.assert_array_equal(found, [[True, False], [True, True]])
  np.testing.assert_array_equal(rows[found], [1, 2, 0])
  with pytest.raises(ValueError, match="unknown request_id 3"):
    ids.lookup_rows(sorted_ids, np.array([5, 3]))


def test_pair_keys_are_distinct_and_refuse_overflow():
  first, second = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
  assert len(np.unique(ids.pair_keys(first, second, 2))) == 4
  huge = np.array([np.int64(20) << 40])  # a request id of user shard 20
  with pytest.raises(OverflowError):
    ids.pair_keys(huge, np.array([1]), 500_000)
  _, ranks = ids.dense_ranks(huge)
  assert ids.pair_keys(ranks, np.array([1]), 500_000)[0] == 1
