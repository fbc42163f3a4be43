"""Command: convert real logs into a world directory.

    python -m data.ingest --source=contract --input=DIR --world_dir=OUT
    python -m data.ingest --source=aliccp --input=DIR --world_dir=OUT

Reads the source in chunks (progress in the log), spilling the parsed rows to day part files
in a temporary directory next to the world (removed at the end), checks it (a bad row stops
the ingest with its file and line; nothing is written), builds and writes the world day by
day, atomically, and prints how many rows of each file were read, kept and dropped, by
reason. The report is also in the manifest.

Nothing is left behind: a SIGTERM ends the ingest as an error would (the temporary
directories removed), and the spool or half-built world of an ingest killed outright
(SIGKILL, a crash) is removed by the next ingest next to the same world, once its process is
gone.
"""

import contextlib
import dataclasses
import glob
import os
import signal
import socket
import tempfile
import time
import types
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from absl import logging

from data.ingest import report as R
from data.ingest import world_builder as W
from data.plumbing import command
from data.plumbing import files

Reader = Callable[..., Tuple[W.LogTables, R.RowReport]]
SPOOL_PREFIX = ".ingest-spool-"
OWNER_FILE = "owner"


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
      "help": "Rows read per chunk (bounds the parser's memory; long lines make a chunk "
              "smaller)."})
  max_days: int = dataclasses.field(default=W.MAX_DAYS, metadata={
      "help": "The most days the log may span, first to last: a longer span is refused, "
              "naming the row that stretches it (a stray or mis-scaled timestamp)."})
  kuairand_random: str = dataclasses.field(default="exclude", metadata={
      "help": "--source=kuairand: the log_random_* files (random exposures, another exposure "
              "policy): exclude (counted), apart (requests of their own) or only.",
      "choices": ("exclude", "apart", "only")})


def check_config(config: IngestConfig) -> None:
  """Refuses bad flags before anything is read, naming the flag."""
  if config.chunk_rows < 1:
    raise command.UserError(f"--chunk_rows={config.chunk_rows}: expected a positive number "
                            "of rows per chunk")
  if config.max_days < 1:
    raise command.UserError(f"--max_days={config.max_days}: expected a positive number of "
                            "days")
  if not config.input or not os.path.isdir(config.input):
    raise command.UserError(f"--input={config.input}: expected a directory of {config.source} "
                            "files")
  if not config.world_dir:
    raise command.UserError("--world_dir is required")
  if os.path.exists(config.world_dir) and not config.overwrite:
    raise command.UserError(f"--world_dir={config.world_dir} exists; pass --overwrite to "
                            "replace it")


def _owner_alive(spool: str) -> bool:
  """Whether the ingest that made `spool` may still run: its owner file ("host pid") names a
  live process, or another host, or (no owner file yet) it was made in the last minute."""
  try:
    with open(os.path.join(spool, OWNER_FILE)) as f:
      host, pid = f.read().split()
  except (OSError, ValueError):
    try:
      return time.time() - os.path.getmtime(spool) < 60
    except OSError:
      return False
  return host != socket.gethostname() or not pid.isdigit() or _pid_alive(int(pid))


def remove_stale(parent: str, world_dir: str) -> None:
  """Removes the spool directories and half-built worlds of earlier ingests killed in
  `parent`: those whose process is gone (owner file), and the world's temporary siblings of
  dead processes."""
  for spool in glob.glob(os.path.join(parent, SPOOL_PREFIX + "*")):
    if os.path.isdir(spool) and not _owner_alive(spool):
      logging.info("removing %s, left by a killed ingest", spool)
      files.remove_tree(spool)
  name = os.path.basename(os.path.abspath(world_dir))
  for tmp in glob.glob(os.path.join(parent, f".{name}.tmp-*")):
    pid = tmp.rsplit("-", 1)[-1].split(".")[0]
    if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
      logging.info("removing %s, left by a killed ingest", tmp)
      files.remove_tree(tmp)


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except PermissionError:
    return True
  except OSError:
    return False
  return True


@contextlib.contextmanager
def _terminated_as_error() -> Iterator[None]:
  """A SIGTERM during the block raises (so every temporary directory is removed) instead of
  ending the process where it stands."""
  def stop(signum: int, frame: Optional[types.FrameType]) -> None:
    raise command.UserError("terminated (SIGTERM): the ingest stopped; nothing was written")
  try:
    previous = signal.signal(signal.SIGTERM, stop)
  except ValueError:  # not the main thread: leave signals alone
    yield
    return
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def ingest(config: IngestConfig) -> Dict[str, Any]:
  """Reads, checks and writes; returns the manifest."""
  check_config(config)
  assert config.world_dir and config.input
  parent = os.path.dirname(os.path.abspath(config.world_dir))
  os.makedirs(parent, exist_ok=True)
  remove_stale(parent, config.world_dir)
  with _terminated_as_error(), tempfile.TemporaryDirectory(prefix=SPOOL_PREFIX,
                                                           dir=parent) as spool_dir:
    files.write_text(os.path.join(spool_dir, OWNER_FILE),
                     f"{socket.gethostname()} {os.getpid()}\n")
    try:
      tables, report = _readers()[config.source](
          config.input, spool_dir, chunk_rows=config.chunk_rows,
          kuairand_random=config.kuairand_random)
      manifest = W.write_world(config.world_dir, tables, report, max_days=config.max_days)
    except MemoryError:
      raise R.OutOfMemory(f"{config.input}: out of memory while ingesting (the input's format "
                          f"is not at fault); lower --chunk_rows (now {config.chunk_rows}) "
                          "or free memory") from None
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
