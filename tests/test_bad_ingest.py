"""data.ingest against hostile but fair input (issue 22's ingest findings), run as a user runs it.

Each row of CASES copies a fixture, breaks it one way and runs `python -m data.ingest` in
process (tests/test_bad_input.py's harness): a refusal exits 2 with one line naming the file
and line, or the flag, and what was expected, and leaves the case directory as it was (no
world, no spool, no temporary directory). The tests after the table cover what is accepted
but counted (a buy without a click, a request id shared by two users, a log appended twice),
and what only a separate process can show: SIGTERM, SIGKILL, an unreadable file, running out
of memory.
"""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional, Sequence

import pytest

import data
from data.ingest import contract
from data.ingest import day_rows
from data.plumbing import files
from tests.bad_input import run_in_process
from tests.bad_input import snapshot

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INGEST = "data.ingest.__main__"
Mutation = Callable[[str], None]  # receives the input directory


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  source: str
  mutate: Optional[Mutation]
  message: str  # a substring of the one-line error
  args: Sequence[str] = ()
  fixture: str = ""  # default: the source's


def _edit(name: str, line: int, edit: Callable[[str], str]) -> Mutation:
  def mutate(input_dir: str) -> None:
    path = os.path.join(input_dir, name)
    with open(path, newline="") as f:
      lines = f.readlines()
    lines[line - 1] = edit(lines[line - 1])
    with open(path, "w", newline="") as f:
      f.writelines(lines)
  return mutate


def _field(index: int, value: str) -> Callable[[str], str]:
  def edit(line: str) -> str:
    fields = line.rstrip("\n").split(",")
    fields[index] = value
    return ",".join(fields) + "\n"
  return edit


def _append(name: str, text: str) -> Mutation:
  def mutate(input_dir: str) -> None:
    with open(os.path.join(input_dir, name), "a") as f:
      f.write(text)
  return mutate


def _bytes_at(name: str, line: int, raw: bytes) -> Mutation:
  """Replaces line `line` (1-based) with raw bytes."""
  def mutate(input_dir: str) -> None:
    path = os.path.join(input_dir, name)
    with open(path, "rb") as f:
      lines = f.readlines()
    lines[line - 1] = raw
    with open(path, "wb") as f:
      f.writelines(lines)
  return mutate


def _serving_impression_feature(input_dir: str) -> None:
  path = os.path.join(input_dir, contract.SCHEMA_FILE)
  schema = files.read_json(path)
  schema["columns"].append({"file": "impressions", "column": "carted", "role": "feature",
                            "name": "carted_in_feed", "kind": "categorical",
                            "availability": "serving"})
  files.write_json(path, schema)


STAY, PRICE = 7, 5  # the contract impressions' stay_seconds and ad_feature's price columns
CASES = [
    Case("negative dwell names its line", "contract",
         _edit("impressions.csv", 9, _field(STAY, "-4.5")),
         "impressions.csv:9: stay_seconds: expected a number >= 0, got '-4.5'"),
    Case("dwell overflowing float32 (1e39) names its line", "contract",
         _edit("impressions.csv", 12, _field(STAY, "1e39")),
         "impressions.csv:12: stay_seconds: expected a finite number"),
    Case("dwell of 1e300 names its line", "contract",
         _edit("impressions.csv", 4, _field(STAY, "1e300")),
         "impressions.csv:4: stay_seconds: expected a finite number"),
    Case("negative price names its line", "taobao_ad",
         _edit("ad_feature.csv", 6, _field(PRICE, "-3.0")),
         "ad_feature.csv:6: price: expected a number >= 0, got '-3.0'"),
    Case("infinite price names its line", "taobao_ad",
         _edit("ad_feature.csv", 3, _field(PRICE, "inf")),
         "ad_feature.csv:3: price: expected a finite number"),
    Case("a timestamp 96,000 days out is refused with the count of days", "contract",
         _append("impressions.csv", "d2r900,u001,i001,9999999999,0,0,0,0.0,0\n"),
         "impressions.csv:722: timestamp 9999999999 (2286-11-20) makes the log span 96,065 "
         "days"),
    Case("a day span over --max_days names the flag", "contract",
         _append("impressions.csv", "d2r900,u001,i001,1709000000,0,0,0,0.0,0\n"),
         "more than --max_days=30", args=("--max_days=30",)),
    Case("a non-UTF-8 byte names its line", "contract",
         _bytes_at("impressions.csv", 5, b"d0r001,u\xff09,i007,1700042800,0,0,0,0.0,0\n"),
         "impressions.csv:5: byte 0xff at column 9 is not UTF-8"),
    Case("--chunk_rows=0 blames the flag", "contract", None,
         "--chunk_rows=0: expected a positive number of rows", args=("--chunk_rows=0",)),
    Case("--max_days=0 blames the flag", "contract", None,
         "--max_days=0: expected a positive number of days", args=("--max_days=0",)),
    Case("a contract without a timezone says which key", "contract",
         _edit("schema.json", 2, lambda line: ""),
         "schema.json: expected key 'timezone'"),
    Case("an unknown timezone is named", "contract",
         _edit("schema.json", 2, lambda line: ' "timezone": "Mars/Olympus",\n'),
         "timezone 'Mars/Olympus': expected an IANA name"),
    Case("a serving impression feature is refused", "contract", _serving_impression_feature,
         "a pair feature must be privileged_cross or privileged_post_click"),
]




def _prepare(case_dir: str, source: str, fixture: str = "") -> str:
  input_dir = os.path.join(case_dir, "input")
  shutil.copytree(os.path.join(FIXTURES, fixture or source), input_dir)
  return input_dir


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_ingest_is_refused_in_one_line_and_writes_nothing(case, tmp_path):
  case_dir = str(tmp_path / "case")
  input_dir = _prepare(case_dir, case.source, case.fixture)
  if case.mutate:
    case.mutate(input_dir)
  before = snapshot(case_dir)
  code, stdout, stderr = run_in_process(INGEST, [f"--source={case.source}",
                                                 f"--input={input_dir}",
                                                 f"--world_dir={case_dir}/world", *case.args])
  output = stdout + stderr
  assert code == 2, output
  assert case.message in output, output
  assert "Traceback" not in output and len(stderr.strip().splitlines()) == 1, output
  assert snapshot(case_dir) == before
  assert sorted(os.listdir(case_dir)) == ["input"]


def _ingest(tmp_path, source, input_dir, *args):
  world_dir = str(tmp_path / "world")
  code, stdout, stderr = run_in_process(INGEST, [f"--source={source}", f"--input={input_dir}",
                                                 f"--world_dir={world_dir}", *args])
  assert code == 0, stdout + stderr
  return files.read_json(os.path.join(world_dir, "manifest.json")), stdout, world_dir


def test_a_buy_on_an_unclicked_row_is_kept_unclicked_without_the_buy_and_counted(tmp_path):
  input_dir = _prepare(str(tmp_path), "contract")
  for line in (3, 4, 40):  # unclicked rows of the fixture
    _edit("impressions.csv", line, _field(6, "1"))(input_dir)
  manifest, stdout, world_dir = _ingest(tmp_path, "contract", input_dir)
  counted = manifest["ingest"]["rows"]["impressions"]["adjusted"]
  assert counted == {day_rows.CONVERSION_WITHOUT_CLICK: 3}
  assert f"3 {day_rows.CONVERSION_WITHOUT_CLICK}" in stdout
  world = data.load(world_dir)
  logs = world.log_arrays(world.days)
  assert not ((logs["conversion"] > 0) & (logs["click"] == 0)).any()


def test_a_request_id_shared_by_two_users_is_split_per_user_and_counted(tmp_path):
  """Rows 2-5 are request d0r000 of u009; two rows of u017 reuse its id."""
  input_dir = _prepare(str(tmp_path), "contract")
  _append("impressions.csv", "d0r000,u017,i001,1700042800,0,1,0,12.0,0\n"
                             "d0r000,u017,i002,1700042801,1,0,0,0.0,0\n")(input_dir)
  manifest, stdout, world_dir = _ingest(tmp_path, "contract", input_dir)
  assert manifest["ingest"]["rows"]["impressions"]["adjusted"] == {contract.SHARED_REQUEST: 2}
  assert f"2 {contract.SHARED_REQUEST}" in stdout
  world = data.load(world_dir)
  logs = world.log_arrays(world.days)
  users_per_request = {}
  for request, user in zip(logs["request_id"].tolist(), logs["user_id"].tolist()):
    users_per_request.setdefault(request, set()).add(user)
  assert all(len(users) == 1 for users in users_per_request.values())
  assert len(users_per_request) == 181  # 180 requests and the split-off one


@pytest.mark.parametrize("source,name", [("contract", "impressions.csv"),
                                         ("kuairand", "log_standard_4_08_to_4_21_1k.csv"),
                                         ("recbole", "ml-fixture.inter")])
def test_a_log_appended_twice_is_reported_as_duplicate_rows(tmp_path, source, name):
  input_dir = _prepare(str(tmp_path), source)
  path = os.path.join(input_dir, name)
  with open(path) as f:
    lines = f.readlines()
  with open(path, "a") as f:
    f.writelines(lines[1:])
  manifest, stdout, _ = _ingest(tmp_path, source, input_dir)
  entry = next(iter(e for e in manifest["ingest"]["rows"].values()
                    if e["read"] == 2 * (len(lines) - 1)))
  reason = day_rows.DUPLICATE if source == "contract" else day_rows.EXACT_DUPLICATE
  assert entry["dropped"] == {reason: len(lines) - 1}
  assert "goes backwards" not in stdout and reason in stdout


def _spawn_ingest(input_dir: str, world_dir: str, *args) -> subprocess.Popen:
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, "-m", "data.ingest", "--source=contract",
                           f"--input={input_dir}", f"--world_dir={world_dir}", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def _long_input(tmp_path) -> str:
  """The contract fixture plus one row 2,500 days later: allowed with --max_days=3000, the
  build of 2,500 empty days takes long enough to be interrupted."""
  input_dir = _prepare(str(tmp_path), "contract")
  _append("impressions.csv", "d9r000,u001,i001,1916000000,0,0,0,0.0,0\n")(input_dir)
  return input_dir


def _wait_for(predicate, seconds: float = 120) -> None:
  deadline = time.time() + seconds
  while not predicate():
    assert time.time() < deadline, "timed out"
    time.sleep(0.05)


def _leftovers(directory: str):
  return [n for n in os.listdir(directory) if n.startswith((".ingest-spool-", ".world"))]


def test_sigterm_mid_build_leaves_nothing_behind(tmp_path):
  input_dir = _long_input(tmp_path)
  child = _spawn_ingest(input_dir, str(tmp_path / "world"), "--max_days=3000")
  _wait_for(lambda: any(n.startswith(".world") for n in os.listdir(tmp_path)))
  child.send_signal(signal.SIGTERM)
  _, stderr = child.communicate(timeout=120)
  assert child.returncode == 2, stderr
  assert "terminated (SIGTERM)" in stderr and "Traceback" not in stderr
  assert not _leftovers(str(tmp_path)) and not os.path.exists(tmp_path / "world")


def test_the_spool_of_a_sigkilled_ingest_is_removed_by_the_next_run(tmp_path):
  input_dir = _long_input(tmp_path)
  child = _spawn_ingest(input_dir, str(tmp_path / "world"), "--max_days=3000")
  _wait_for(lambda: any(n.startswith(".world") for n in os.listdir(tmp_path)))
  child.kill()
  child.communicate(timeout=60)
  assert len(_leftovers(str(tmp_path))) == 2  # what a SIGKILL leaves: the spool, the world
  _ingest(tmp_path, "contract", _prepare(str(tmp_path / "again"), "contract"))
  assert not _leftovers(str(tmp_path))


@pytest.fixture
def shared_dir():
  """A directory every user can traverse (pytest's own tmp root is private to its owner)."""
  path = tempfile.mkdtemp(prefix="pfd-bad-ingest-", dir="/tmp")
  os.chmod(path, 0o777)
  yield path
  shutil.rmtree(path, ignore_errors=True)


def _as_another_user(command):
  """`command` run as an unprivileged user (root reads any file): setpriv as nobody."""
  if os.geteuid() != 0:
    return command
  setpriv = shutil.which("setpriv")
  if setpriv is None:
    pytest.skip("running as root without setpriv: no user for whom a file is unreadable")
  return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]


def test_an_unreadable_input_file_is_reported_as_permission_denied(shared_dir):
  input_dir = _prepare(shared_dir, "contract")
  os.chmod(os.path.join(input_dir, "impressions.csv"), 0)
  command = _as_another_user([sys.executable, "-m", "data.ingest", "--source=contract",
                              f"--input={input_dir}", f"--world_dir={shared_dir}/world"])
  result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
  assert result.returncode == 2, result.stderr
  assert f"permission denied: {input_dir}/impressions.csv" in result.stderr, result.stderr
  assert "corrupt" not in result.stderr and "Traceback" not in result.stderr
  assert not _leftovers(shared_dir)


def test_an_unreadable_world_log_is_reported_as_permission_denied(shared_dir, tiny_world_dir):
  world_dir = os.path.join(shared_dir, "world")
  shutil.copytree(tiny_world_dir, world_dir)
  manifest = files.read_json(os.path.join(world_dir, "manifest.json"))
  log = next(p for p in sorted(manifest["files"]) if p.startswith("logs/"))
  os.chmod(os.path.join(world_dir, log), 0)
  code = ("import data\n"
          "try:\n"
          f"  data.load({world_dir!r}, verify='size')\n"
          "except Exception as error:\n"
          "  print(type(error).__name__, error)\n")
  result = subprocess.run(_as_another_user([sys.executable, "-c", code]), capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
  assert result.stdout.startswith("PermissionError") and log in result.stdout, result.stdout
  assert "Permission denied" in result.stdout and "corrupt" not in result.stdout


def test_running_out_of_memory_is_not_reported_as_a_format_error(tmp_path):
  """The parser is given far less memory than a chunk needs (RLIMIT_AS just above what the
  imports took): the message says memory and --chunk_rows, not 'not a ,-separated file'."""
  input_dir = _prepare(str(tmp_path), "contract")
  path = os.path.join(input_dir, "impressions.csv")
  with open(path) as f:
    lines = f.readlines()
  rows = [f"x{k:06d}r{line.split(',', 1)[1]}" for k, line in enumerate(lines[1:] * 400)]
  with open(path, "w") as f:
    f.write(lines[0])
    f.writelines(rows)  # 288,000 rows, 40 MB of text in one chunk
  code = ("import resource, sys\n"
          "import numpy, pandas, pyarrow, pyarrow.parquet\n"
          "from data.ingest import __main__ as m\n"
          "size = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024\n"
          "resource.setrlimit(resource.RLIMIT_AS, (size + (120 << 20), size + (120 << 20)))\n"
          f"sys.argv = ['data.ingest', '--source=contract', '--input={input_dir}', "
          f"'--world_dir={tmp_path}/world', '--chunk_rows=10000000']\n"
          "m.run()\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
  assert result.returncode == 2, result.stderr[-2000:]
  assert "out of memory" in result.stderr and "--chunk_rows" in result.stderr
  assert "separated file" not in result.stderr
  assert not _leftovers(str(tmp_path))


# ------------------------------------------------------------------ degenerate runs (issue 21)


def _world_of(tmp_path, fixture: str, source: str = "contract",
              edit: Optional[Mutation] = None) -> str:
  input_dir = _prepare(str(tmp_path / "input_of_world"), source, fixture)
  if edit:
    edit(input_dir)
  world_dir = str(tmp_path / "degenerate_world")
  code, stdout, stderr = run_in_process(INGEST, [f"--source={source}", f"--input={input_dir}",
                                                 f"--world_dir={world_dir}"])
  assert code == 0, stdout + stderr
  return world_dir


def _zero_column(index: int) -> Mutation:
  def mutate(input_dir: str) -> None:
    path = os.path.join(input_dir, "impressions.csv")
    with open(path) as f:
      lines = f.readlines()
    with open(path, "w") as f:
      f.write(lines[0])
      f.writelines(_field(index, "0")(line) for line in lines[1:])
  return mutate


def _fine(world_dir: str, model_dir: str, *flags):
  return run_in_process("stages.fine", [f"--world_dir={world_dir}", f"--model_dir={model_dir}",
                                        *flags])


def test_a_cvr_stage_on_a_log_without_conversions_stops_in_one_line(tmp_path):
  world_dir = _world_of(tmp_path, "contract_obd")
  code, stdout, stderr = _fine(world_dir, str(tmp_path / "models"), "--task=cvr")
  assert code == 2, stdout + stderr
  assert "hold no conversions among" in stderr and len(stderr.strip().splitlines()) == 1
  assert not os.path.exists(tmp_path / "models")


def test_a_pfd_teacher_whose_privileged_features_are_all_zero_stops_in_one_line(tmp_path):
  world_dir = _world_of(tmp_path, "contract", edit=lambda d: (_zero_column(STAY)(d),
                                                              _zero_column(8)(d)))
  code, stdout, stderr = _fine(world_dir, str(tmp_path / "models"), "--task=cvr",
                               "--variant=pfd")
  assert code == 2, stdout + stderr
  assert ("every privileged feature its teacher reads (dwell_seconds, added_to_cart) is 0 in "
          "all training rows") in stderr
  assert len(stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "models")


def _warnings(model_dir: str, stage: str) -> Sequence[str]:
  return files.read_json(os.path.join(model_dir, stage, "metrics.json")).get("warnings", [])


def test_a_tiny_run_warns_of_its_few_steps_and_its_small_eval_day(tmp_path):
  """The contract fixture's 480 training impressions are one step at the default batch of
  1,024; its eval day holds 21 users and 30 clicks."""
  world_dir = _world_of(tmp_path, "contract")
  model_dir = str(tmp_path / "models")
  code, stdout, stderr = _fine(world_dir, model_dir, "--task=ctr")
  assert code == 0, stdout + stderr
  warnings = _warnings(model_dir, "fine/ctr/baseline")
  assert len(warnings) == 2 and all("\n" not in w for w in warnings)
  assert "1 training step(s) (480 rows, --batch_size=1024, --epochs=1): fewer than 32" in (
      warnings[0])
  assert "eval day 3 holds" in warnings[1] and "its AUC is mostly noise" in warnings[1]
  assert "training step(s)" in stdout  # metrics.json as the command prints it


def test_a_pfd_teacher_with_some_privileged_features_all_zero_warns(tmp_path):
  world_dir = _world_of(tmp_path, "contract", edit=_zero_column(8))
  model_dir = str(tmp_path / "models")
  code, stdout, stderr = _fine(world_dir, model_dir, "--task=cvr", "--variant=pfd",
                               "--batch_size=16")
  assert code == 0, stdout + stderr
  warnings = _warnings(model_dir, "fine/cvr/pfd")
  assert any("privileged feature(s) added_to_cart are 0 in every training row" in w
             for w in warnings), warnings


def test_a_pfd_teacher_on_a_world_without_privileged_features_stops_in_one_line(tmp_path):
  """Ali-CCP has no post-click signal: its world declares none, so a CVR teacher would read
  what the student reads (the world used to hold zero-filled slots instead)."""
  world_dir = _world_of(tmp_path, "aliccp", source="aliccp")
  code, stdout, stderr = _fine(world_dir, str(tmp_path / "models"), "--task=cvr",
                               "--variant=pfd")
  assert code == 2, stdout + stderr
  assert "this world has no privileged feature for the fine_cvr stage" in stderr
  assert len(stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "models")


def test_a_replay_ranked_by_gmv_on_a_world_without_prices_is_refused_in_one_line(tmp_path):
  world_dir = _world_of(tmp_path, "contract_obd")
  code, stdout, stderr = run_in_process("experiments.replay", [
      f"--world_dir={world_dir}", f"--model_dir={tmp_path}/models", f"--run_dir={tmp_path}/run",
      "--rank_by=ctcvr_gmv", "--cvr_variant=pfd"])
  assert code == 2, stdout + stderr
  assert "--rank_by=ctcvr_gmv needs item prices" in stderr
  assert not os.path.exists(tmp_path / "run")
