"""Wall time and peak memory of the demo (`make demo`'s job), measured from outside.

    python -m benchmarks.demo --work_dir=/tmp/demo_bench [-- extra demo flags]

Runs `python -m experiments.demo` in a child process on a fresh work dir and prints its wall
time and the child's peak RSS (getrusage RUSAGE_CHILDREN). Target on 2 cores: at most 15
minutes and 6 GB for the small world. Run it on an otherwise idle machine.
"""

import resource
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def main(argv):
  shutil.rmtree(FLAGS.work_dir, ignore_errors=True)
  command = [sys.executable, "-m", "experiments.demo", f"--work_dir={FLAGS.work_dir}",
             f"--preset={FLAGS.preset}"] + list(argv[1:])
  print("running:", " ".join(command), flush=True)
  start = time.perf_counter()
  result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  seconds = time.perf_counter() - start
  peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
  print(f"demo exit status {result.returncode}: {seconds / 60:.1f} min wall, "
        f"peak RSS {peak_gb:.2f} GB (targets: 15 min, 6 GB)")
  return result.returncode


def run() -> None:
  flags.DEFINE_string("work_dir", "/tmp/demo_bench", "Fresh work dir for the demo (deleted "
                      "first).")
  flags.DEFINE_string("preset", "small", "World preset.")
  app.run(main)


if __name__ == "__main__":
  run()
