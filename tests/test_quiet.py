"""Quiet by default: no CUDA or absl start-up notice from importing the project on a CPU
machine unless --verbosity asks for it; real errors still show; one progress line in a
terminal, log lines elsewhere."""

import io
import os
import subprocess
import sys

from absl import logging

from data.plumbing import progress
from models import startup

NOTICES = ("cuInit", "cuda drivers", "absl::InitializeLog", "oneDNN")
IMPORT = "import models, tensorflow as tf; print(tf.constant(3).numpy())"


def _python(code, *args):
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS")}
  return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                        timeout=300, env=env)


def test_importing_the_project_prints_no_start_up_notice_unless_verbosity_asks():
  quiet = _python(IMPORT)
  assert quiet.returncode == 0 and quiet.stdout.strip() == "3"
  assert not any(notice in quiet.stderr for notice in NOTICES), quiet.stderr
  verbose = _python(IMPORT, "--verbosity=1")
  assert verbose.returncode == 0
  # What the notices look like on this machine; a GPU machine would print others.
  assert "absl::InitializeLog" in verbose.stderr or "cuda" in verbose.stderr.lower()


def test_a_real_error_during_the_quiet_start_still_shows():
  code = ("import os, sys\nfrom models import startup\nwith startup.quiet_start():\n"
          "  os.write(2, b'failed call to cuInit: noise\\nsomething real broke\\n')\n")
  result = _python(code)
  assert "something real broke" in result.stderr and "cuInit" not in result.stderr


def test_verbosity_flags_are_read_the_ways_absl_accepts_them():
  assert startup.verbose_requested(["prog", "--verbosity=1"])
  assert startup.verbose_requested(["prog", "-v", "2"])
  assert startup.verbose_requested(["prog", "--verbosity", "1"])
  assert not startup.verbose_requested(["prog", "--verbosity=0"])
  assert not startup.verbose_requested(["prog", "--world_dir=v1"])


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_a_terminal_gets_one_rewritten_line_and_a_pipe_gets_log_lines(monkeypatch):
  terminal = _Terminal()
  line = progress.Line("replay", stream=terminal, min_interval=0)
  for i in range(3):
    line.update("batch %d/3", i + 1)
  assert terminal.getvalue().count("\r\033[K") == 3 and "\n" not in terminal.getvalue()
  assert terminal.getvalue().endswith("replay: batch 3/3")
  logged = []
  monkeypatch.setattr(logging, "info", lambda message, *args: logged.append(message % args))
  line.done("%d requests", 30)
  assert terminal.getvalue().endswith("\r\033[K") and logged == ["replay: 30 requests"]
  piped = progress.Line("replay", log_every=2, stream=io.StringIO())
  for i in range(4):
    piped.update("batch %d/4", i + 1)
  assert logged[1:] == ["replay: batch 2/4", "replay: batch 4/4"]
