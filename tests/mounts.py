"""Disks that fail: a full one and a read-only one, real where the machine allows.

A full disk is a small tmpfs filled to its last page; a read-only one is a read-only bind
mount. Both need root (mount(2)); CI and the developers' machines run as root. Where mounting
is refused, `full_disk` and `read_only_dir` fall back to a fault-injecting file layer: every
project write goes through `data.plumbing.files.write_with` and `atomic_directory` (and directories
through `os.makedirs`), which are patched to fail with ENOSPC / EROFS under the path, as the
kernel would. A test that needs TensorFlow's own writes to fail (its checkpoints and
SavedModels bypass that layer) asks for `real=True` and is skipped, saying why, without mounts.
"""

import contextlib
import errno
import os
import subprocess
from typing import Iterator, Optional

import pytest

from data.plumbing import files

MESSAGES = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system"}


def _mount(*args: str) -> Optional[str]:
  """None when `mount args` worked, else why not."""
  try:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.TimeoutExpired) as error:
    return str(error)
  return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def _umount(path: str) -> None:
  subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


def _fill(path: str) -> None:
  """Writes zeros until the filesystem at `path` has no page left."""
  with open(os.path.join(path, ".filler"), "wb", buffering=0) as f:
    try:
      while True:
        f.write(b"\0" * 4096)
    except OSError as error:
      assert error.errno == errno.ENOSPC, error


@contextlib.contextmanager
def _failing_layer(root: str, code: int, monkeypatch) -> Iterator[str]:
  """Project writes (and new directories) under `root` fail with `code`, as the kernel's."""
  def refuse(path: str) -> None:
    if os.path.abspath(path).startswith(os.path.abspath(root)):
      raise OSError(code, MESSAGES[code], path)

  write_with, makedirs = files.write_with, os.makedirs

  def failing_write_with(path, write):
    refuse(path)
    return write_with(path, write)

  def failing_makedirs(path, *args, **kwargs):
    if not os.path.isdir(path):
      refuse(path)
    return makedirs(path, *args, **kwargs)

  monkeypatch.setattr(files, "write_with", failing_write_with)
  monkeypatch.setattr(os, "makedirs", failing_makedirs)
  yield root


@contextlib.contextmanager
def full_disk(path: str, monkeypatch, size: str = "256k", fill: bool = True,
              real: bool = False) -> Iterator[str]:
  """`path` on a tmpfs of `size`, filled (or left empty: a run fills it), or a fault layer."""
  os.makedirs(path, exist_ok=True)
  refused = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", path)
  if refused:
    if real:
      pytest.skip(f"cannot mount a tmpfs here ({refused}); TensorFlow's writes bypass the "
                  "fault-injecting layer")
    with _failing_layer(path, errno.ENOSPC, monkeypatch):
      yield path
    return
  try:
    if fill:
      _fill(path)
    yield path
  finally:
    _umount(path)


@contextlib.contextmanager
def read_only_dir(path: str, monkeypatch, real: bool = False) -> Iterator[str]:
  """`path` bind-mounted read-only onto itself (an empty directory), or a fault layer."""
  os.makedirs(path, exist_ok=True)
  refused = _mount("--bind", "-o", "ro", path, path)
  if refused:
    if real:
      pytest.skip(f"cannot mount read-only here ({refused})")
    with _failing_layer(path, errno.EROFS, monkeypatch):
      yield path
    return
  try:
    yield path
  finally:
    _umount(path)


def leftovers(root: str):
  """Temporary files a failed write left under `root` (data.plumbing.files: .X.tmp-PID)."""
  return [os.path.join(d, n) for d, dirs, names in os.walk(root) for n in names + dirs
          if ".tmp-" in n]
