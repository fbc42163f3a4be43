"""Full integrity check of a world directory, naming every damaged file.

    python -m data.verify --world_dir=W

Commands open a world with a cheap check (sizes, footers, columns); this one reads every byte:
each file's sha256 against the manifest, the manifest's own world_hash, and the feature schema
against the one the code declares for the world's config (or, for a world from real logs that
declares its own schema, against the rules of `data.world.declared`, the schema being hashed
with the world). The schema decides which columns a serving model may read, so a manifest whose
schema was edited (a post-click signal relabelled `serving`, say) must be refused, not trusted.
Exit status 0 when the world is intact, 1 with one line per problem otherwise.
"""

import dataclasses
import os
from typing import Any, Dict, List, Optional

from absl import logging
import pyarrow as pa
import pyarrow.parquet as pq

from data.plumbing import command
from data.plumbing import files
from data.world import integrity
from data.world import io
from data.world import schema as schema_lib


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
  world_dir: Optional[str] = dataclasses.field(
      default=None, metadata={"help": "The world directory to check."})


schema_problems = integrity.schema_problems  # The check data.load also makes, on every load.


def file_problems(world_dir: str, manifest: Dict[str, Any]) -> List[str]:
  """Every file of the manifest that is missing, of another size or hash, unreadable, or with
  values outside their declared range."""
  problems: List[str] = []
  schema = schema_lib.Schema.from_json(manifest["schema"])
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
        table = pq.read_table(path)
      except (pa.ArrowException, OSError) as error:
        problems.append(f"{path}: not readable as Parquet ({error})")
        continue
      problems += integrity.value_problems(path, table, schema)
  if io.manifest_world_hash(manifest) != manifest["world_hash"]:
    problems.append(f"{os.path.join(world_dir, io.MANIFEST)}: world_hash does not match the "
                    "config and file hashes (manifest edited)")
  return problems


def verify(world_dir: str) -> List[str]:
  """Every problem of the world at `world_dir` (empty when it is intact)."""
  path = os.path.join(world_dir, io.MANIFEST)
  if not os.path.isfile(path):
    raise command.UserError(f"{path}: no manifest; --world_dir={world_dir} is not a world")
  manifest = files.read_json(path)
  return integrity.schema_problems(manifest) + file_problems(world_dir, manifest)


def main() -> None:
  config = command.config_from_flags(VerifyConfig)
  if not config.world_dir:
    raise command.UserError("--world_dir is required")
  problems = verify(config.world_dir)
  for problem in problems:
    print(problem)
  if problems:
    raise SystemExit(1)
  logging.info("%s: every file matches its manifest; the schema is %s", config.world_dir,
               "declared and hashed" if files.read_json(os.path.join(
                   config.world_dir, io.MANIFEST)).get("schema_declared") else "the code's")
  print(f"{config.world_dir}: intact")


def run() -> None:
  command.define_config_flags(VerifyConfig)
  command.start(command.run_command(main, "data.verify"))


if __name__ == "__main__":
  run()
