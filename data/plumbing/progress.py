"""One-line progress in a terminal, log lines elsewhere.

    line = progress.Line("generate")
    line.update(f"shard 0 day 3/8: 2,512 requests")   # terminal: rewrites one line in place
    line.done("world ready in 4.2s")                   # ends it; logged as usual

When stderr is a terminal (isatty) a command's progress is one line rewritten in place
(carriage return, clear to the end of the line); the absl log lines that come in between are
printed above it (the line is cleared before each one and redrawn at the next update). When
stderr is a file or a pipe (CI, a study's child processes, `make demo > log`), each update is
an absl INFO line as before, `log_every` updates apart. Pure Python: data/ never imports
TensorFlow.
"""

import logging as std_logging
import sys
import time
from typing import Any, Optional, TextIO

from absl import logging

_ACTIVE: Optional["Line"] = None


def interactive(stream: Optional[TextIO] = None) -> bool:
  stream = stream or sys.stderr
  return bool(getattr(stream, "isatty", lambda: False)())


class _ClearBeforeLog(std_logging.Filter):
  """Clears the live progress line before a log record is printed below it."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if _ACTIVE is not None:
      _ACTIVE.clear()
    return True


_FILTER = _ClearBeforeLog()
for _name in ("update", "done"):  # log lines name the caller's file, not this one
  logging.ABSLLogger.register_frame_to_skip(__file__, _name)


class Line:
  """A command's progress: `update(text)` as work goes, `done(text)` at the end."""

  def __init__(self, what: str, log_every: int = 1, stream: Optional[TextIO] = None,
               min_interval: float = 0.1):
    self.what, self.log_every, self.min_interval = what, max(1, log_every), min_interval
    self.stream = stream or sys.stderr
    self.live = interactive(self.stream)
    self._shown, self._updates, self._last = False, 0, 0.0
    if self.live:
      handler = logging.get_absl_handler()
      if _FILTER not in handler.filters:
        handler.addFilter(_FILTER)

  def update(self, text: str, *args: Any, force: bool = False) -> None:
    """Shows `text % args` (terminal: in place, at most every `min_interval` s; else an INFO
    line every `log_every` updates, or when `force`d)."""
    self._updates += 1
    if not self.live:
      if force or self._updates % self.log_every == 0:
        logging.info(f"{self.what}: {text}", *args)
      return
    now = time.monotonic()
    if not force and now - self._last < self.min_interval:
      return
    self._last = now
    global _ACTIVE
    _ACTIVE = self
    message = f"{self.what}: {text % args if args else text}"
    self.stream.write("\r\033[K" + message)
    self.stream.flush()
    self._shown = True

  def clear(self) -> None:
    if self._shown:
      self.stream.write("\r\033[K")
      self.stream.flush()
      self._shown = False

  def done(self, text: str, *args: Any) -> None:
    """Ends the line and logs `text % args` as an INFO line (in a terminal too)."""
    global _ACTIVE
    self.clear()
    if _ACTIVE is self:
      _ACTIVE = None
    logging.info(f"{self.what}: {text}", *args)
