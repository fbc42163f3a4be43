"""Quiet start-up on CPU machines: TensorFlow's import-time noise kept off the terminal.

TensorFlow 2.21 logs, while its libraries load and before absl's C++ logging is initialised,
lines that read like failures on a machine without a GPU: "All log messages before
absl::InitializeLog() ...", "Could not find cuda drivers", "failed call to cuInit: ... UNKNOWN
ERROR (303)", the oneDNN notice. They bypass TF_CPP_MIN_LOG_LEVEL. `quiet_start` runs the
import with the process's stderr (file descriptor 2) captured, then writes back every line
that is not one of those known notices, so a real error still shows. `models/__init__` uses
it unless the command asks for more with --verbosity=1 (or -v 1) or higher; it also keeps
TensorFlow's and FAISS's Python INFO chatter (checkpoint sharding, library loading) below
WARNING then. Nothing here imports TensorFlow.
"""

import contextlib
import logging
import os
import sys
import tempfile
from typing import Iterator, Sequence

# Start-up notices of a CPU-only machine, matched as substrings of a captured line.
NOISE = ("All log messages before absl::InitializeLog() is called",
         "oneDNN custom operations are on",
         "Could not find cuda drivers on your machine",
         "failed call to cuInit",
         "Unable to register cuDNN factory", "Unable to register cuFFT factory",
         "Unable to register cuBLAS factory", "computation_placer.cc",
         "TF-TRT Warning", "This TensorFlow binary is optimized to use available CPU",
         "Could not load dynamic library 'libcuda")
QUIET_LOGGERS = ("tensorflow", "faiss")


def verbose_requested(argv: Sequence[str]) -> bool:
  """Whether the command line asks absl for verbosity >= 1 (--verbosity=N, --verbosity N,
  -v N or -vN): then TensorFlow's start-up logs are shown as they come."""
  args = list(argv[1:])
  for i, arg in enumerate(args):
    value = None
    if arg.startswith("--verbosity="):
      value = arg.split("=", 1)[1]
    elif arg in ("--verbosity", "-v") and i + 1 < len(args):
      value = args[i + 1]
    elif arg.startswith("-v") and arg[2:].lstrip("-").isdigit():
      value = arg[2:]
    if value is not None:
      try:
        return int(value) >= 1
      except ValueError:
        return False
  return False


def keep(line: str) -> bool:
  """Whether a captured start-up line is worth showing (not a known CPU-machine notice)."""
  return not any(notice in line for notice in NOISE)


@contextlib.contextmanager
def quiet_start(enabled: bool = True) -> Iterator[None]:
  """Runs the block with stderr captured at the file-descriptor level (C++ logs included);
  afterwards writes back the lines `keep` accepts. A no-op when not `enabled`."""
  if not enabled:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode("utf-8", errors="replace")
      shown = "".join(line for line in text.splitlines(keepends=True) if keep(line))
      if shown:
        sys.stderr.write(shown)
        sys.stderr.flush()


def quiet_python_loggers(enabled: bool = True) -> None:
  """TensorFlow's and FAISS's Python loggers at WARNING (their INFO lines are routine)."""
  if enabled:
    for name in QUIET_LOGGERS:
      logging.getLogger(name).setLevel(logging.WARNING)
