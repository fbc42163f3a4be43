"""data.verify: an intact world passes; a flipped bit or an edited schema is named."""

import json
import shutil
import subprocess
import sys

from data import verify


def _copy(tiny_world_dir, tmp_path):
  target = tmp_path / "world"
  shutil.copytree(tiny_world_dir, target)
  return target


def test_an_intact_world_has_no_problem(tiny_world_dir):
  assert verify.verify(tiny_world_dir) == []


def test_a_flipped_bit_names_the_file(tiny_world_dir, tmp_path):
  world = _copy(tiny_world_dir, tmp_path)
  items = world / "items.parquet"
  raw = bytearray(items.read_bytes())
  raw[len(raw) // 2] ^= 0x01  # same size, different content
  items.write_bytes(bytes(raw))
  problems = verify.verify(str(world))
  assert len(problems) == 1 and "items.parquet" in problems[0] and "sha256" in problems[0]


def test_an_edited_schema_is_refused_naming_the_feature(tiny_world_dir, tmp_path):
  world = _copy(tiny_world_dir, tmp_path)
  manifest_path = world / "manifest.json"
  manifest = json.loads(manifest_path.read_text())
  for row in manifest["schema"]:
    if row["name"] == "dwell_seconds":
      row["availability"] = "serving"
  manifest_path.write_text(json.dumps(manifest))
  problems = verify.verify(str(world))
  assert any("dwell_seconds" in p and "availability" in p for p in problems)


def test_the_command_exits_1_on_damage_and_2_on_a_missing_world(tiny_world_dir, tmp_path):
  world = _copy(tiny_world_dir, tmp_path)
  (world / "users.parquet").write_bytes(b"garbage")
  damaged = subprocess.run([sys.executable, "-m", "data.verify", f"--world_dir={world}"],
                           capture_output=True, text=True)
  assert damaged.returncode == 1 and "users.parquet" in damaged.stdout
  missing = subprocess.run([sys.executable, "-m", "data.verify",
                            f"--world_dir={tmp_path / 'nothing'}"], capture_output=True, text=True)
  assert missing.returncode == 2 and "no manifest" in missing.stderr
