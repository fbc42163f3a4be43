"""Wall time, rows/s and peak memory of `data.ingest` on a generated input, measured from outside.

    python -m benchmarks.ingest --rows=10000000 --work_dir=/tmp/ingest_bench [--chunk_rows=N]
    python -m benchmarks.ingest --source=aliccp --rows=1000000 --work_dir=/tmp/ingest_bench

--source=contract (the default) writes a contract directory (tests/fixtures/contract's
schema.json, users, items, and an impressions.csv of --rows rows: 5 impressions per request,
100k users, 200k items, over --days days, 30 by default). --source=aliccp writes Ali-CCP's
four files in their exact format and layout (sample_train/, sample_test/): --rows skeleton
rows (half train, half test), 20 samples per common-feature record, each skeleton row 13
`field\x02id\x03value` entries (the combination fields 508, 509, 702 and 853 among them,
real-valued weights), each common record --common_entries (500, as the real ones).

The input is written by one child process; the benchmark then runs `python -m data.ingest`
on it in another and prints its wall time, CPU time (user + system: the figure to compare on
a shared machine), rows per second of each, and peak RSS (that child's own, from os.wait4;
Linux carries a process's peak RSS into the children it forks, so the generator must not run
in the parent). Figures: docs/real_logs.md, "Limits".
"""

import os
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np
import pandas as pd

FLAGS = flags.FLAGS
FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                       "fixtures", "contract")
N_USERS, N_ITEMS, PAGE, DAYS = 100_000, 200_000, 5, 30
COMMON_ENTRIES = 500  # entries of a real Ali-CCP common-feature record, about


def write_input(input_dir: str, rows: int, seed: int = 0, days: int = DAYS) -> None:
  """A contract directory with `rows` impressions over `days` days, written in blocks of 10^6
  rows."""
  os.makedirs(input_dir, exist_ok=True)
  shutil.copy(os.path.join(FIXTURE, "schema.json"), input_dir)
  rng = np.random.default_rng(seed)
  users = pd.DataFrame({"user_key": [f"u{u}" for u in range(N_USERS)],
                        "age_level": rng.integers(0, 7, N_USERS),
                        "gender": rng.choice(["F", "M"], N_USERS),
                        "consumption_level": rng.integers(0, 5, N_USERS)})
  users.to_csv(os.path.join(input_dir, "users.csv"), index=False)
  items = pd.DataFrame({"item_key": [f"i{i}" for i in range(N_ITEMS)],
                        "category": rng.integers(0, 500, N_ITEMS),
                        "shop": rng.integers(0, 10_000, N_ITEMS),
                        "brand": rng.integers(0, 5_000, N_ITEMS),
                        "price": np.round(rng.lognormal(3, 1, N_ITEMS), 2)})
  items.to_csv(os.path.join(input_dir, "items.csv"), index=False)
  pd.DataFrame({"user_key": ["u0"], "item_key": ["i0"], "time": [1_700_000_000]}).to_csv(
      os.path.join(input_dir, "behaviour.csv"), index=False)
  path = os.path.join(input_dir, "impressions.csv")
  block = 1_000_000
  for start in range(0, rows, block):
    n = min(block, rows - start)
    index = np.arange(start, start + n)
    request = index // PAGE
    click = (rng.random(n) < 0.05).astype(int)
    frame = pd.DataFrame({
        "request": request, "user_key": np.char.add("u", (request % N_USERS).astype(str)),
        "item_key": np.char.add("i", rng.integers(0, N_ITEMS, n).astype(str)),
        "time": 1_700_000_000 + request * (days * 86_400) // max(rows // PAGE, 1),
        "position": index % PAGE, "clicked": click,
        "bought": click * (rng.random(n) < 0.1), "stay_seconds": click * 30.0,
        "carted": click * (rng.random(n) < 0.2)})
    frame.to_csv(path, mode="w" if start == 0 else "a", header=start == 0, index=False)


def _entries(fields, ids, values) -> pd.Series:
  """`field\x02id\x03value` entries of one field per row (ids, values: Series)."""
  return fields + "\x02" + ids.astype(str) + "\x03" + values


def _feature_list(entries) -> pd.Series:
  out = entries[0]
  for entry in entries[1:]:
    out = out + "\x01" + entry
  return out


def _fillers(rng, n_variants: int, entries: int):
  """`n_variants` strings of `entries` common-feature entries each (interest fields with
  real-valued weights), shared by the records: the parser's work is the same as for distinct
  entries, and the input is written in minutes instead of hours."""
  fields = np.array(["109_14", "110_14", "127_14", "150_14"])
  out = []
  for _ in range(n_variants):
    ids = rng.integers(0, 10**6, entries)
    weights = np.round(rng.lognormal(0, 1, entries), 5)
    out.append("\x01".join(f"{fields[k % 4]}\x02{ids[k]}\x03{weights[k]}"
                           for k in range(entries)))
  return np.array(out, dtype=object)


def write_aliccp_input(input_dir: str, rows: int, seed: int = 0,
                       common_entries: int = COMMON_ENTRIES) -> None:
  """Ali-CCP as the archives unpack (sample_train/, sample_test/): `rows` skeleton rows split
  between train and test, no header; each common record `common_entries` entries."""
  rng = np.random.default_rng(seed)
  per_record = 20
  fillers = _fillers(rng, 256, max(common_entries - 4, 1))
  for split, n_split in (("train", rows - rows // 2), ("test", rows // 2)):
    out = os.path.join(input_dir, f"sample_{split}")
    os.makedirs(out, exist_ok=True)
    n_records = max(-(-n_split // per_record), 1)
    md5 = pd.Series([f"{split[:2]}{r:030x}" for r in range(n_records)])
    path = os.path.join(out, f"common_features_{split}.csv")
    for start in range(0, n_records, 100_000):
      stop = min(start + 100_000, n_records)
      user = pd.Series(rng.integers(0, N_USERS, stop - start))
      ones = pd.Series(np.full(stop - start, "1"))
      head = _feature_list([_entries("101", user, ones), _entries("124", user % 2, ones),
                            _entries("125", user % 7, ones), _entries("126", user % 5, ones)])
      lists = head + "\x01" + pd.Series(fillers[rng.integers(0, len(fillers), stop - start)])
      pd.DataFrame({"md5": md5[start:stop].to_numpy(), "n": 4 + len(fillers[0].split("\x01")),
                    "features": lists.to_numpy()}).to_csv(
          path, mode="w" if start == 0 else "a", header=False, index=False)
    path = os.path.join(out, f"sample_skeleton_{split}.csv")
    block = 1_000_000
    for start in range(0, n_split, block):
      n = min(block, n_split - start)
      index = np.arange(start, start + n)
      item = pd.Series(rng.integers(0, N_ITEMS, n))
      ones = pd.Series(np.full(n, "1"))
      value = lambda n: pd.Series(np.round(rng.lognormal(0, 1, n), 5).astype(str))  # noqa: E731
      skeleton = [_entries("205", item, ones), _entries("206", item % 500, ones),
                  _entries("207", item % 10_000, ones), _entries("216", item % 5_000, ones),
                  _entries("301", pd.Series(index % per_record % 3), ones)]
      skeleton += [_entries("210", pd.Series(rng.integers(0, 50_000, n)), value(n))
                   for _ in range(2)]
      skeleton += [_entries(field, pd.Series(rng.integers(0, 10**6, n)), value(n))
                   for field in ("508", "509", "702", "853", "853", "508")]
      click = (rng.random(n) < 0.04).astype(int)
      frame = pd.DataFrame({"sample_id": index + 1, "click": click,
                            "buy": click * (rng.random(n) < 0.05),
                            "md5": md5[index // per_record].to_numpy(), "n": len(skeleton),
                            "features": _feature_list(skeleton)})
      frame.to_csv(path, mode="w" if start == 0 else "a", header=False, index=False)


def _generate(input_dir: str) -> None:
  """Writes the input in a child process: the ingest's peak RSS must not include the
  generator's (Linux carries a parent's peak RSS into a forked child's ru_maxrss)."""
  code = (f"from benchmarks.ingest import write_aliccp_input, write_input; "
          f"write_{'aliccp_' if FLAGS.source == 'aliccp' else ''}input({input_dir!r}, "
          f"{FLAGS.rows}" + (f", days={FLAGS.days})" if FLAGS.source == "contract" else
                             f", common_entries={FLAGS.common_entries})"))
  subprocess.run([sys.executable, "-c", code], check=True)


def main(argv):
  del argv
  input_dir = os.path.join(FLAGS.work_dir, "input")
  start = time.perf_counter()
  reused = FLAGS.reuse_input and os.path.isdir(input_dir)
  if reused:
    shutil.rmtree(os.path.join(FLAGS.work_dir, "world"), ignore_errors=True)
  else:
    shutil.rmtree(FLAGS.work_dir, ignore_errors=True)
    _generate(input_dir)
  size_gb = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in
                os.walk(input_dir) for name in names) / 2**30
  print(f"{'reused' if reused else 'wrote'} {FLAGS.rows} {FLAGS.source} impressions "
        f"({size_gb:.2f} GB) in {time.perf_counter() - start:.0f}s", flush=True)
  command = [sys.executable, "-m", "data.ingest", f"--source={FLAGS.source}",
             f"--input={input_dir}",
             f"--world_dir={os.path.join(FLAGS.work_dir, 'world')}",
             f"--chunk_rows={FLAGS.chunk_rows}"]
  print("running:", " ".join(command), flush=True)
  start = time.perf_counter()
  child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
  stdout = child.stdout.read() if child.stdout else ""
  _, status, usage = os.wait4(child.pid, 0)  # this child's own resource usage
  seconds = time.perf_counter() - start
  returncode = os.waitstatus_to_exitcode(status)
  peak_gb, cpu = usage.ru_maxrss / 2**20, usage.ru_utime + usage.ru_stime
  print(stdout.strip())
  print(f"machine load average (1, 5, 15 min) at the end: {os.getloadavg()}")
  print(f"ingest exit status {returncode}: {FLAGS.rows} rows, {seconds:.0f}s wall "
        f"({FLAGS.rows / max(seconds, 1e-9):,.0f} rows/s), {cpu:.0f}s CPU "
        f"({FLAGS.rows / max(cpu, 1e-9):,.0f} rows per CPU second), peak RSS {peak_gb:.2f} GB "
        f"({peak_gb * 2**30 / max(FLAGS.rows, 1):.0f} bytes/row)")
  return returncode


def run() -> None:
  flags.DEFINE_enum("source", "contract", ["contract", "aliccp"], "The input's format.")
  flags.DEFINE_integer("rows", 10_000_000, "Impressions in the generated file.")
  flags.DEFINE_string("work_dir", "/tmp/ingest_bench", "Fresh work dir (deleted first).")
  flags.DEFINE_integer("chunk_rows", 1 << 20, "data.ingest --chunk_rows.")
  flags.DEFINE_integer("days", DAYS, "--source=contract: days the impressions span (with "
                       "--rows, sets the rows per day the day-by-day build holds at once).")
  flags.DEFINE_integer("common_entries", COMMON_ENTRIES, "--source=aliccp: entries of each "
                       "common-feature record (about 500 in the real data).")
  flags.DEFINE_bool("reuse_input", False, "Keep WORK_DIR/input if it exists (the same flags "
                    "wrote it) and only rerun the ingest.")
  app.run(main)


if __name__ == "__main__":
  run()
