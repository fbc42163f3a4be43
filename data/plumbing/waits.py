"""Bounded waits: a block that may wait on the network forever gets a deadline and SIGTERM.

TensorFlow's cluster connection and Ray's connection to a cluster wait in C++: no Python signal
handler or exception reaches them, and both install SIGTERM handlers of their own that swallow
the signal. `bounded` runs such a block under a watchdog thread that, while it lasts, keeps
SIGTERM's default action (the process ends, as a user who sends it expects) and, once
`timeout` seconds have passed, prints one line naming the wait and the flag that bounds it and
ends the process with exit status 2. No TensorFlow here: data/ and models/ both use it.
"""

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Iterator

WATCH_SECONDS = 0.2


def _main_module() -> str:
  """The running command's module ('data.generate' for `python -m data.generate`), or ''."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  return getattr(spec, "name", "") or ""


@contextlib.contextmanager
def bounded(what: str, timeout: float, flag: str, restore_sigterm: bool = True,
            command: str = "") -> Iterator[None]:
  """Runs the block with a deadline of `timeout` seconds (0: none) and SIGTERM honoured.

  Args:
    what: the wait, for the message ("connecting to the Ray cluster at X").
    timeout: seconds; past them the process prints one line and exits with status 2.
    flag: the flag that sets `timeout`, named in the message.
    restore_sigterm: afterwards, SIGTERM's default action in the main thread (a library that
      installed a handler swallowing it during the wait loses it).
    command: the command's name, the message's prefix (default: the `python -m` module).
  """
  done = threading.Event()
  libc = ctypes.CDLL(None)
  command = command or _main_module()
  prefix = f"{command}: error" if command else "error"

  def watch() -> None:
    deadline = time.monotonic() + timeout
    while not done.wait(WATCH_SECONDS):
      libc.signal(signal.SIGTERM, ctypes.c_void_p(0))  # SIG_DFL, whoever installed another
      if timeout and time.monotonic() > deadline:
        sys.stderr.write(f"{prefix}: {what}: no answer after {timeout:g}s ({flag}); giving up\n")
        sys.stderr.flush()
        os._exit(2)

  thread = threading.Thread(target=watch, name="bounded-wait", daemon=True)
  thread.start()
  try:
    yield
  finally:
    done.set()
    thread.join()
    if restore_sigterm and threading.current_thread() is threading.main_thread():
      signal.signal(signal.SIGTERM, signal.SIG_DFL)
