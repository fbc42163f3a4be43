"""Command: convert real logs into a world directory.

    python -m data.ingest --source=contract --input=DIR --world_dir=OUT
    python -m data.ingest --source=aliccp --input=DIR --world_dir=OUT

Reads the source in chunks (progress in the log), spilling the parsed rows to day part files
in a temporary directory next to the world (removed at the end), checks it (a bad row stops
the ingest with its file and line; nothing is written), builds and writes the world day by
day, atomically, and prints how many rows of each file were read, kept and dropped, by
reason. The report is also in the manifest.
"""

import dataclasses
import os
import tempfile
from typing import Callable, Dict, Optional, Tuple

from absl import logging

from data import command
from data.ingest import report as R
from data.ingest import world_builder as W

Reader = Callable[..., Tuple[W.LogTables, R.RowReport]]


def _readers() -> Dict[str, Reader]:
  from data.ingest import aliccp
  from data.ingest import contract
  from data.ingest import kuairand
  from data.ingest import recbole
  from data.ingest import taobao_ad
  return {"contract": contract.read_contract, "aliccp": aliccp.read_aliccp,
          "taobao_ad": taobao_ad.read_taobao_ad, "kuairand": kuairand.read_kuairand,
          "recbole": recbole.read_recbole}


SOURCES = ("contract", "aliccp", "taobao_ad", "kuairand", "recbole")


@dataclasses.dataclass(frozen=True)
class IngestConfig:
  source: str = dataclasses.field(default="contract", metadata={
      "help": "The input's format.", "choices": SOURCES})
  input: Optional[str] = dataclasses.field(default=None, metadata={
      "help": "Directory holding the source's files."})
  world_dir: Optional[str] = dataclasses.field(default=None, metadata={
      "help": "The world directory to write (replaced whole only with --overwrite)."})
  overwrite: bool = dataclasses.field(default=False, metadata={
      "help": "Replace an existing --world_dir."})
  chunk_rows: int = dataclasses.field(default=R.CHUNK_ROWS, metadata={
      "help": "Rows read per chunk (bounds the parser's memory)."})


def ingest(config: IngestConfig) -> dict:
  """Reads, checks and writes; returns the manifest."""
  if not config.input or not os.path.isdir(config.input):
    raise command.UserError(f"--input={config.input}: expected a directory of {config.source} "
                            "files")
  if not config.world_dir:
    raise command.UserError("--world_dir is required")
  if os.path.exists(config.world_dir) and not config.overwrite:
    raise command.UserError(f"--world_dir={config.world_dir} exists; pass --overwrite to "
                            "replace it")
  parent = os.path.dirname(os.path.abspath(config.world_dir))
  os.makedirs(parent, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix=".ingest-spool-", dir=parent) as spool_dir:
    tables, report = _readers()[config.source](config.input, spool_dir,
                                               chunk_rows=config.chunk_rows)
    manifest = W.write_world(config.world_dir, tables, report)
  print(report.format())
  return manifest


def main() -> None:
  config = command.config_from_flags(IngestConfig)
  manifest = ingest(config)
  total = sum(c["impressions"] for c in manifest["row_counts"].values())
  logging.info("world ready in %s: %d impressions over %d days, no oracle", config.world_dir,
               total, len(manifest["days"]))
  print(f"world: {config.world_dir} ({total} impressions, days {manifest['days']})")


def run() -> None:
  command.define_config_flags(IngestConfig)
  command.start(command.run_command(main, "data.ingest"))


if __name__ == "__main__":
  run()
