"""Peak resident memory of one stage run, measured on a child process.

    python -m benchmarks.memory --world_dir=/tmp/perf-small --model_dir=/tmp/mem_models
    python -m benchmarks.memory --world_dir=W --model_dir=M --stage=stages.coarse --args=

Runs the stage command (default: `python -m stages.fine --task=ctr`) as a child process with
--noreuse, waits for it, and prints its wall time and peak resident set size (the kernel's
`ru_maxrss` of the waited-for child, the figure `/usr/bin/time -v` prints as "Maximum resident
set size"). Issue 19 targets at most 1.5 GB for every stage on the small world and 4 GB for
fine CTR on the medium world (benchmarks.memory_table runs them all). Figures, not
assertions: the child's own load and the machine's load are printed with them.
"""

import os
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("world_dir", None, "World to train on.", required=True)
  flags.DEFINE_string("model_dir", None, "Scratch model directory (written).", required=True)
  flags.DEFINE_string("stage", "stages.fine", "Stage command module.")
  flags.DEFINE_list("args", ["--task=ctr"], "Extra flags of the stage command.")


def peak_rss(command, cwd=None, env=None, output=subprocess.DEVNULL) -> tuple:
  """(exit code, wall seconds, peak RSS in bytes) of `command` run as a child process.

  The figure is that child's own (os.wait4's rusage), so calls in a row do not see the
  maximum of the children before them, as RUSAGE_CHILDREN would. The child's stdout and
  stderr go to `output` (a file or DEVNULL).
  """
  started = time.perf_counter()
  child = subprocess.Popen(command, stdout=output, stderr=output, cwd=cwd,
                           env=env)
  _, status, usage = os.wait4(child.pid, 0)
  child.returncode = os.waitstatus_to_exitcode(status)
  seconds = time.perf_counter() - started
  # Linux reports ru_maxrss in KiB.
  return child.returncode, seconds, usage.ru_maxrss * 1024


def main(argv) -> None:
  del argv
  command = [sys.executable, "-m", FLAGS.stage, f"--world_dir={FLAGS.world_dir}",
             f"--model_dir={FLAGS.model_dir}", "--noreuse", *FLAGS.args]
  load = os.getloadavg()[0]
  code, seconds, rss = peak_rss(command)
  print(f"command: {' '.join(command[1:])}")
  print(f"exit code {code}, wall {seconds:.1f} s, load average at start {load:.1f}")
  print(f"peak RSS: {rss / 1e9:.2f} GB ({rss / 2 ** 30:.2f} GiB)")


if __name__ == "__main__":
  define_flags()
  app.run(main)
