"""Generation: determinism, sharding, on-disk safety, bad input and the command's exit codes."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

import data
from data import generate
from data.world import io
from tests.test_world_helpers import cached_tiny_world
from tests.test_world_helpers import world_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
  return cached_tiny_world(tmp_path_factory)


@pytest.fixture
def world_copy(world_dir, tmp_path):
  copy = str(tmp_path / "copy")
  shutil.copytree(world_dir, copy)
  return copy


def test_same_seed_same_bytes_other_seed_differs(world_dir, tmp_path):
  again = str(tmp_path / "again")
  generate.generate(again, data.preset("tiny"))
  assert world_files(again) == world_files(world_dir)
  other = str(tmp_path / "other")
  generate.generate(other, data.preset("tiny", seed=1))
  assert data.load(other).world_hash != data.load(world_dir).world_hash
  assert world_files(other)["logs/day=01/part-00000.parquet"] != \
      world_files(world_dir)["logs/day=01/part-00000.parquet"]


def test_manifest_contents(world_dir):
  world = data.load(world_dir)
  manifest = world.manifest
  assert manifest["config"] == data.preset("tiny").to_dict()
  assert manifest["seed"] == 0 and manifest["format_version"] == io.FORMAT_VERSION
  assert world.schema == data.build_schema(world.config)
  assert world.days == [1, 2, 3, 4]
  counts = manifest["row_counts"]["1"]
  assert counts["impressions"] == len(world.logs(1))
  assert counts["impressions"] == counts["requests"] * world.config.page_size
  assert counts["clicks"] == int(world.logs(1)["click"].sum())
  assert not os.path.exists(os.path.join(world_dir, generate.SHARDS_DIR))


def test_parallel_shards_equal_in_process_shards(tmp_path):
  config = data.preset("tiny", n_user_shards=2)
  in_process = str(tmp_path / "in_process")
  generate.generate(in_process, config)
  separate = str(tmp_path / "separate")
  for shard in (1, 0):
    assert generate.generate(separate, config, shard=shard) is None
  assert not os.path.exists(os.path.join(separate, io.MANIFEST))
  generate.generate(separate, config)
  assert world_files(separate) == world_files(in_process)
  world = data.load(in_process)
  request_ids = world.requests(world.days)["request_id"].to_numpy()
  assert len(np.unique(request_ids)) == len(request_ids)
  assert len(world.logs(1)["user_id"].unique()) > config.n_users // 2


def test_existing_world_is_reused_and_other_configs_refused(world_copy):
  manifest = generate.generate(world_copy, data.preset("tiny"))
  assert manifest["world_hash"] == data.load(world_copy).world_hash
  with pytest.raises(FileExistsError, match="different config"):
    generate.generate(world_copy, data.preset("tiny", seed=3))


def test_refuses_a_directory_that_is_not_a_world(tmp_path):
  target = tmp_path / "mine"
  target.mkdir()
  (target / "notes.txt").write_text("precious")
  with pytest.raises(FileExistsError, match="not a world"):
    generate.generate(str(target), data.preset("tiny"))
  generate.generate(str(target), data.preset("tiny"), overwrite=True)
  assert (target / "notes.txt").read_text() == "precious"
  data.load(str(target))


def test_killed_run_leaves_no_world(tmp_path, monkeypatch):
  calls = {"n": 0}
  real_write = io.write_table

  def crash_after_day_two(table, path):
    calls["n"] += 1
    if calls["n"] > 6:  # three files per day
      raise KeyboardInterrupt("simulated kill")
    real_write(table, path)

  monkeypatch.setattr(io, "write_table", crash_after_day_two)
  target = str(tmp_path / "killed")
  with pytest.raises(KeyboardInterrupt):
    generate.generate(target, data.preset("tiny"))
  leftovers = [os.path.join(r, f) for r, d, fs in os.walk(target) for f in fs + d]
  assert not [p for p in leftovers if ".tmp" in p or "day=" in p or p.endswith(io.MANIFEST)]
  with pytest.raises(FileNotFoundError, match="no manifest"):
    data.load(target)
  monkeypatch.setattr(io, "write_table", real_write)
  generate.generate(target, data.preset("tiny"))  # a rerun completes without --overwrite
  data.load(target)


def test_truncated_or_corrupt_file_is_named(world_copy):
  path = os.path.join(world_copy, "logs", "day=02", "part-00000.parquet")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match="day=02/part-00000.parquet"):
    data.load(world_copy)
  world = data.load(world_copy, verify=False)
  with pytest.raises(ValueError, match="day=02/part-00000.parquet.*Parquet"):
    world.logs(2)


def test_flipped_bytes_fail_the_hash(world_copy):
  path = os.path.join(world_copy, "requests", "day=01", "part-00000.parquet")
  with open(path, "r+b") as f:
    f.seek(100)
    byte = f.read(1)
    f.seek(100)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(ValueError, match="requests/day=01/part-00000.parquet: sha256"):
    data.load(world_copy)
  data.load(world_copy, verify="size")  # the cheap check only looks at sizes and footers


def _rewrite_manifest(world_dir, edit):
  path = os.path.join(world_dir, io.MANIFEST)
  with open(path) as f:
    manifest = json.load(f)
  edit(manifest)
  with open(path, "w") as f:
    json.dump(manifest, f)


def test_manifest_hash_mismatch_is_named(world_copy):
  _rewrite_manifest(world_copy, lambda m: m["files"]["items.parquet"].update(sha256="0" * 64))
  with pytest.raises(ValueError, match="items.parquet: sha256"):
    data.load(world_copy)
  _rewrite_manifest(world_copy, lambda m: m["files"]["items.parquet"].update(
      sha256=io.sha256_file(os.path.join(world_copy, "items.parquet"))))
  _rewrite_manifest(world_copy, lambda m: m.update(world_hash="f" * 64))
  with pytest.raises(ValueError, match="manifest.json: world_hash"):
    data.load(world_copy)


def test_missing_column_is_named(world_copy):
  relative = os.path.join("logs", "day=03", "part-00000.parquet")
  path = os.path.join(world_copy, relative)
  pq.write_table(pq.read_table(path).drop_columns(["item_price"]), path)

  def rehash(manifest):
    manifest["files"][relative] = {"sha256": io.sha256_file(path),
                                   "bytes": os.path.getsize(path)}
    manifest["world_hash"] = io.world_hash(manifest["config"], manifest["files"])

  _rewrite_manifest(world_copy, rehash)
  with pytest.raises(ValueError, match="day=03/part-00000.parquet: missing column 'item_price'"):
    data.load(world_copy)


def test_bad_configs_name_the_problem():
  with pytest.raises(ValueError, match="unknown preset 'huge'"):
    data.preset("huge")
  with pytest.raises(ValueError, match="--n_items"):
    data.preset("tiny", n_items=-1)
  with pytest.raises(ValueError, match="--shard"):
    generate.generate("/nonexistent/never", data.preset("tiny"), shard=5)


def _run_command(*flags):
  return subprocess.run([sys.executable, "-m", "data.generate", *flags], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flags, expected", [
    (["--preset=huge"], "--preset"),
    (["--preset=tiny", "--n_users=-5"], "--n_users must be a positive integer"),
    (["--preset=tiny", "--intent_drift=2"], "--intent_drift must be in [0, 1]"),
])
def test_command_rejects_bad_flags(tmp_path, flags, expected):
  result = _run_command(f"--world_dir={tmp_path / 'w'}", *flags)
  assert result.returncode != 0
  errors = [line for line in result.stderr.splitlines() if "rror" in line]
  assert len(errors) == 1 and expected in errors[0], result.stderr
  assert not os.path.exists(tmp_path / "w" / io.MANIFEST)


def test_command_generates_with_a_flagfile(tmp_path):
  flagfile = tmp_path / "world.flags"
  flagfile.write_text(f"--world_dir={tmp_path / 'w'}\n--preset=tiny\n--n_days=2\n")
  result = _run_command(f"--flagfile={flagfile}")
  assert result.returncode == 0, result.stderr
  world = data.load(str(tmp_path / "w"))
  assert world.days == [1, 2] and world.config.n_users == 400
