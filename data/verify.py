"""Full integrity check of a world directory, naming every damaged file.

    python -m data.verify --world_dir=W

Commands open a world with a cheap check (sizes, footers, columns); this one reads every byte:
each file's sha256 against the manifest, the manifest's own world_hash, and the feature schema
against the one the code declares for the world's config. The schema decides which columns a
serving model may read, so a manifest whose schema was edited (a post-click signal relabelled
`serving`, say) must be refused, not trusted. Exit status 0 when the world is intact, 1 with one
line per problem otherwise.
"""

import dataclasses
import os
from typing import List, Optional

from absl import logging
import pyarrow as pa
import pyarrow.parquet as pq

from data import command
from data import config as config_lib
from data import files
from data import io
from data import schema as schema_lib

# Schema fields that manifests written before they existed lack; Schema.from_json fills them.
FIELDS_ADDED_LATER = frozenset({"source"})


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
  world_dir: Optional[str] = dataclasses.field(
      default=None, metadata={"help": "The world directory to check."})


def schema_problems(manifest: dict) -> List[str]:
  """Differences between the manifest's schema and the code's schema for its config."""
  declared = schema_lib.build_schema(config_lib.WorldConfig.from_dict(manifest["config"]))
  stored = {row["name"]: row for row in manifest["schema"]}
  problems = []
  for feature in declared.features:
    row = stored.pop(feature.name, None)
    if row is None:
      problems.append(f"schema: feature {feature.name!r} is missing from the manifest")
      continue
    expected = dataclasses.asdict(feature)
    for key in sorted(expected):
      if key in FIELDS_ADDED_LATER and key not in row:
        continue  # a world generated before the field existed (its bytes are unchanged)
      value = row.get(key)
      value = tuple(value) if isinstance(value, list) else value
      if value != expected[key]:
        problems.append(f"schema: feature {feature.name!r} field {key!r} is {value!r} in the "
                        f"manifest, the code declares {expected[key]!r}")
  problems += [f"schema: feature {name!r} is not declared by the code" for name in stored]
  return problems


def file_problems(world_dir: str, manifest: dict) -> List[str]:
  """Every file of the manifest that is missing, of another size or hash, or unreadable."""
  problems = []
  for relative, entry in sorted(manifest["files"].items()):
    path = os.path.join(world_dir, relative)
    if not os.path.isfile(path):
      problems.append(f"{path}: missing")
    elif os.path.getsize(path) != entry["bytes"]:
      problems.append(f"{path}: {os.path.getsize(path)} bytes, the manifest says "
                      f"{entry['bytes']}")
    elif io.sha256_file(path) != entry["sha256"]:
      problems.append(f"{path}: content differs from the manifest (sha256 mismatch)")
    else:
      try:
        pq.read_metadata(path)
      except (pa.ArrowException, OSError) as error:
        problems.append(f"{path}: not readable as Parquet ({error})")
  if io.world_hash(manifest["config"], manifest["files"]) != manifest["world_hash"]:
    problems.append(f"{os.path.join(world_dir, io.MANIFEST)}: world_hash does not match the "
                    "config and file hashes (manifest edited)")
  return problems


def verify(world_dir: str) -> List[str]:
  """Every problem of the world at `world_dir` (empty when it is intact)."""
  path = os.path.join(world_dir, io.MANIFEST)
  if not os.path.isfile(path):
    raise command.UserError(f"{path}: no manifest; --world_dir={world_dir} is not a world")
  manifest = files.read_json(path)
  return schema_problems(manifest) + file_problems(world_dir, manifest)


def main() -> None:
  config = command.config_from_flags(VerifyConfig)
  if not config.world_dir:
    raise command.UserError("--world_dir is required")
  problems = verify(config.world_dir)
  for problem in problems:
    print(problem)
  if problems:
    raise SystemExit(1)
  logging.info("%s: every file matches its manifest; the schema is the code's", config.world_dir)
  print(f"{config.world_dir}: intact")


def run() -> None:
  command.define_config_flags(VerifyConfig)
  command.start(command.run_command(main, "data.verify"))


if __name__ == "__main__":
  run()
