"""Real logs as their users bring them: their clocks, their datasets as distributed, their schema.

  - Time: for every source, a user's request at 00:30 local time and another at 20:00 the
    same local day, both clicked. The early one must see nothing of the late one (no
    behaviour history, no 24h count), the late one must see the early click, whatever the
    source's timezone. Cutting days in UTC put the early request (16:30 UTC the day before,
    in Beijing) after the late one (12:00 UTC): the look-ahead of issue 21.
  - Each adapter on its dataset's layout and quirks (tests/fixtures/make_fixtures.py).
  - The world's schema: declared by the source, validated, hashed with the world; the
    simulated world's schema and hash unchanged.
"""

import json
import os
import shlex
import shutil

import numpy as np
import pytest

import data
from data import verify
from data.ingest import aliccp
from data.ingest import clock as clock_lib
from data.ingest import day_rows
from data.ingest import declaration
from data.ingest import kuairand
from data.ingest import report as R
from data.ingest.__main__ import IngestConfig
from data.ingest.__main__ import ingest
from data.plumbing import files
from data.world import declared
from data.world import io
from data.world import schema as S
from tests.test_bad_input import run_in_process

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
LOCAL_DAY = 19_676  # 2023-11-15, as a local day number
EARLY, LATE = 30 * 60, 20 * 3600  # 00:30 and 20:00 local time
BEIJING_MAY_14 = 1_494_691_200  # 2017-05-14 00:00 in Beijing, the day after the test day


def _local(timezone: str, seconds: int) -> int:
  """Unix time of `seconds` after local midnight of 2023-11-15 in `timezone`."""
  offset = clock_lib.utc_offset(timezone, LOCAL_DAY * 86_400)
  return LOCAL_DAY * 86_400 - offset + seconds


def _write(directory, name, text):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, name), "w", newline="") as f:
    f.write(text)


def _contract(directory, timezone):
  t0, t1 = _local(timezone, EARLY), _local(timezone, LATE)
  _write(directory, "impressions.csv", "request,user,item,time,clicked\n"
         f"a,u1,i1,{t0},1\na,u1,i2,{t0},0\nb,u1,i3,{t1},1\nb,u1,i2,{t1},0\n"
         f"c,u2,i1,{t1 + 3600},0\n")
  schema = {"timezone": timezone, "impressions": {"file": "impressions.csv"}, "columns": [
      {"file": "impressions", "column": c, "role": r} for c, r in
      (("request", "request_id"), ("user", "user_id"), ("item", "item_id"),
       ("time", "timestamp"), ("clicked", "click"))]}
  _write(directory, "schema.json", json.dumps(schema))


def _recbole(directory, timezone):
  t0, t1 = _local(timezone, EARLY), _local(timezone, LATE)
  _write(directory, "ml.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         f"1\t1\t5\t{t0}\n1\t3\t5\t{t1}\n2\t1\t1\t{t1 + 3600}\n")
  _write(directory, "recbole.json", json.dumps({"dataset": "ml", "timezone": timezone,
                                                "click": {"field": "rating", "threshold": 4}}))


def _kuairand(directory, _):
  timezone = kuairand.TIMEZONE
  shutil.copy(os.path.join(FIXTURES, "kuairand", "video_features_basic_1k.csv"), directory)
  shutil.copy(os.path.join(FIXTURES, "kuairand", "user_features_1k.csv"), directory)
  header = open(os.path.join(FIXTURES, "kuairand", "log_standard_4_08_to_4_21_1k.csv")
                ).readline()
  rows = []
  for user, item, seconds, hourmin in ((0, 1, EARLY, 0), (0, 0, LATE, 2000),  # tag 1 both
                                       (1, 1, LATE + 3600, 2100)):
    t_ms = _local(timezone, seconds) * 1000
    click = int(user == 0)
    rows.append(f"{user},{item},20231115,{hourmin},{t_ms},{click},0,0,0,0,0,0,"
                f"{1000 * click},1000,0,0,0,0,1\n")
  _write(directory, "log_standard_test.csv", header + "".join(rows))


def _taobao(directory, _):
  for name in ("ad_feature.csv", "user_profile.csv"):
    shutil.copy(os.path.join(FIXTURES, "taobao_ad", name), directory)
  t0, t1 = _local("Asia/Shanghai", EARLY), _local("Asia/Shanghai", LATE)
  _write(directory, "raw_sample.csv", "user,time_stamp,adgroup_id,pid,nonclk,clk\n"
         f"100,{t0},600001,p,0,1\n100,{t1},600001,p,0,1\n101,{t1 + 3600},600001,p,1,0\n")
  category = open(os.path.join(FIXTURES, "taobao_ad", "ad_feature.csv")).readlines()[2]
  _write(directory, "behavior_log.csv", "user,time_stamp,btag,cate,brand\n"
         f"100,{t1 - 3600},pv,{category.split(',')[1]},NULL\n")


SOURCES = {"contract": _contract, "recbole": _recbole, "kuairand": _kuairand,
           "taobao_ad": _taobao}


def _two_requests(world):
  """The first user's requests (the early one first), as rows of `world.request_arrays`."""
  requests = world.request_arrays(world.days)
  rows = np.flatnonzero(requests[S.USER_ID] == 0)
  return {k: v[rows[np.argsort(requests[S.TIMESTAMP][rows])]] for k, v in requests.items()}


@pytest.mark.parametrize("source,timezone", [
    ("contract", "UTC"), ("contract", "Asia/Shanghai"), ("contract", "America/Chicago"),
    ("contract", "-11:00"), ("contract", "+14:00"), ("recbole", "Asia/Shanghai"),
    ("recbole", "Pacific/Auckland"), ("kuairand", None), ("taobao_ad", None)])
def test_no_request_sees_an_event_after_it_across_local_midnight(source, timezone, tmp_path):
  input_dir = str(tmp_path / "input")
  os.makedirs(input_dir)
  SOURCES[source](input_dir, timezone)
  ingest(IngestConfig(source=source, input=input_dir, world_dir=str(tmp_path / "world")))
  world = data.load(str(tmp_path / "world"))
  requests = _two_requests(world)
  assert requests[S.DAY].tolist() == [1, 1]  # one local day: the early one is not the day before
  assert requests[S.TIMESTAMP].tolist() == [EARLY, LATE]  # local seconds of day 1
  assert requests["hist_len"].tolist() == [0.0, 1.0]  # the early click, not the late one
  assert requests["context_hour"].tolist() == [0, 20]
  logs = world.log_arrays(world.days)
  mine = logs[S.USER_ID] == 0
  early = mine & (logs[S.TIMESTAMP] == EARLY)
  late = mine & (logs[S.TIMESTAMP] == LATE)
  assert (logs["cross_clicks_cate_24h"][early] == 0).all()
  if source == "taobao_ad":  # its category counter counts the behaviour log's pv at 19:00
    assert logs["cross_clicks_cate_24h"][late].max() == 1
  else:  # the logged click at 00:30 (every item of these worlds is one category, or 1)
    assert logs["cross_clicks_cate_24h"][late].max() >= 1


def test_aliccp_requests_never_see_their_own_day(tmp_path):
  """Ali-CCP has no clock: every impression of a split sits at its day's first second, so
  two requests of one user in the train split see nothing of each other; the test split
  (day 2) sees both."""
  world_dir = str(tmp_path / "world")
  ingest(IngestConfig(source="aliccp", input=os.path.join(FIXTURES, "aliccp"),
                      world_dir=world_dir))
  world = data.load(world_dir)
  requests = world.request_arrays(world.days)
  assert set(requests[S.TIMESTAMP][requests[S.DAY] == 1].tolist()) == {0}
  assert (requests["hist_len"][requests[S.DAY] == 1] == 0).all()
  assert requests["hist_len"][requests[S.DAY] == 2].max() > 0


def _ingest(tmp_path, source, fixture=None, **flags):
  world_dir = str(tmp_path / "world")
  manifest = ingest(IngestConfig(source=source, input=os.path.join(FIXTURES, fixture or source),
                                 world_dir=world_dir, **flags))
  assert verify.verify(world_dir) == []
  return manifest, data.load(world_dir)


def test_kuairand_random_exposures_are_excluded_by_default_and_counted(tmp_path):
  manifest, world = _ingest(tmp_path, "kuairand")
  rows = manifest["ingest"]["rows"]
  assert rows["log_random"] == {"read": 90, "kept": 0, "adjusted": {}, "dropped": {
      "random exposure (--kuairand_random=exclude)": 90}}
  assert sum(c["impressions"] for c in manifest["row_counts"].values()) == 720


def _requests_of(name: str):
  """The distinct (user, date, hourmin) of one of the fixture's logs."""
  with open(os.path.join(FIXTURES, "kuairand", name)) as f:
    return {tuple(line.split(",")[i] for i in (0, 2, 3)) for line in f.readlines()[1:]}


def _random_requests():
  return _requests_of("log_random_4_08_to_4_21_1k.csv")


def test_kuairand_random_exposures_apart_are_requests_of_their_own(tmp_path):
  """Read into the standard log's requests, their rows (between the standard rows in time)
  made a request go backwards; kept apart, they are requests of their own."""
  manifest, world = _ingest(tmp_path, "kuairand", kuairand_random="apart")
  logs = world.log_arrays(world.days)
  assert len(logs[S.REQUEST_ID]) == 810
  standard = _requests_of("log_standard_4_08_to_4_21_1k.csv")
  assert _random_requests() <= standard  # the random rows are in hours of standard requests
  assert len(np.unique(logs[S.REQUEST_ID])) == len(standard) + len(_random_requests())


def test_kuairand_random_exposures_alone(tmp_path):
  manifest, world = _ingest(tmp_path, "kuairand", kuairand_random="only")
  logs = world.log_arrays(world.days)
  assert len(logs[S.REQUEST_ID]) == 90
  assert len(np.unique(logs[S.REQUEST_ID])) == len(_random_requests())


def test_kuairand_declares_its_own_features_instead_of_the_simulators_slots(tmp_path):
  _, world = _ingest(tmp_path, "kuairand")
  names = world.schema.names
  assert "user_is_video_author" in names and "user_gender" not in names
  assert "item_music" in names and "item_brand" not in names
  assert "cross_clicks_brand_24h" not in names  # no brand: no brand counter
  assert world.schema["user_is_video_author"].vocab_size == 2


def test_aliccp_as_distributed(tmp_path):
  """The two folders; the combination fields' real-valued weights as numeric features with
  weight buckets (not summed into count buckets); buys without a click counted; 3 gender and
  8 age ids sized from the data, none out of vocabulary."""
  manifest, world = _ingest(tmp_path, "aliccp")
  for column in aliccp.CROSS_FIELDS.values():
    feature = world.schema[column]
    assert (feature.kind, feature.availability) == (S.NUMERIC, S.PRIVILEGED_CROSS)
    assert feature.buckets == aliccp.WEIGHT_BUCKETS
  logs = world.log_arrays(world.days)
  assert 2.30 < logs["cross_category_weight"].max() < 2.31
  rows = manifest["ingest"]["rows"]
  assert rows["sample_skeleton_train"]["adjusted"] == {day_rows.CONVERSION_WITHOUT_CLICK: 11}
  assert rows["sample_skeleton_test"]["adjusted"] == {day_rows.CONVERSION_WITHOUT_CLICK: 4}
  assert world.schema["user_gender"].vocab_size == 3
  assert world.schema["user_age_bucket"].vocab_size == 8
  assert manifest["ingest"]["out_of_vocabulary"] == {}


def test_aliccp_files_side_by_side_work_too(tmp_path):
  flat = tmp_path / "flat"
  flat.mkdir()
  for split in ("train", "test"):
    folder = os.path.join(FIXTURES, "aliccp", f"sample_{split}")
    for name in os.listdir(folder):
      shutil.copy(os.path.join(folder, name), flat)
  from_flat = ingest(IngestConfig(source="aliccp", input=str(flat),
                                  world_dir=str(tmp_path / "flat_world")))
  nested = ingest(IngestConfig(source="aliccp", input=os.path.join(FIXTURES, "aliccp"),
                               world_dir=str(tmp_path / "nested")))
  assert from_flat["world_hash"] == nested["world_hash"]


def test_taobao_days_are_beijing_days_and_the_published_test_day_is_the_default(tmp_path):
  """A third of the fixture's requests are before 08:00 Beijing, the UTC day before: cut in
  UTC the three days would be four partial ones. A stray row on 2017-05-14 makes a fourth
  day; the default eval day stays 2017-05-13."""
  manifest, world = _ingest(tmp_path, "taobao_ad")
  assert manifest["days"] == [1, 2, 3] and manifest["ingest"]["timezone"] == "Asia/Shanghai"
  assert world.default_eval_day == 3
  input_dir = str(tmp_path / "stray")
  shutil.copytree(os.path.join(FIXTURES, "taobao_ad"), input_dir)
  with open(os.path.join(input_dir, "raw_sample.csv"), "a") as f:
    f.write(f"100,{BEIJING_MAY_14 + 3600},600001,p,1,0\n")
  stray = ingest(IngestConfig(source="taobao_ad", input=input_dir,
                              world_dir=str(tmp_path / "stray_world")))
  assert stray["days"] == [1, 2, 3, 4] and stray["default_eval_day"] == 3
  from stages import config as config_lib
  from stages import driver
  config = config_lib.FineConfig(world_dir=str(tmp_path / "stray_world"), model_dir="unused")
  resolved = driver.resolve(config, data.load(str(tmp_path / "stray_world")))
  assert resolved.eval_day == 3 and list(resolved.train_days) == [1, 2]


def test_ml100k_with_the_shipped_mapping(tmp_path):
  """The real dataset's 61 ages go to 7 age groups, its 21 occupations to 21 ids, the movie
  without a release year to the first decade bucket (counted): nothing out of vocabulary."""
  manifest, world = _ingest(tmp_path, "recbole", fixture="ml-100k")
  shipped = files.read_json(os.path.join(os.path.dirname(FIXTURES), os.pardir, "examples",
                                         "ml-100k", "recbole.json"))
  assert shipped["dataset"] == "ml-100k"
  assert files.read_json(os.path.join(FIXTURES, "ml-100k", "recbole.json")) == shipped
  ages = [line.split("\t")[1] for line in
          open(os.path.join(FIXTURES, "ml-100k", "ml-100k.user")).readlines()[1:]]
  assert len(set(ages)) == 61
  assert world.schema["user_age_bucket"].vocab_size == 7
  assert world.schema["user_occupation"].vocab_size == 21
  assert manifest["ingest"]["out_of_vocabulary"] == {}
  assert manifest["ingest"]["missing_values"] == {"item_release_decade": 1}
  assert sorted(world.users["user_age_bucket"].unique().tolist()) == list(range(7))


def test_codes_beyond_a_declared_vocabulary_go_to_the_oov_id_counted(tmp_path):
  """contract_obd's user_feature_0 has codes 0..11 declared with "size": 7: the world stores
  7 (the out-of-vocabulary id) for 8..11, counts them, and verifies intact."""
  manifest, world = _ingest(tmp_path, "contract", fixture="contract_obd")
  raw = np.array([int(line.split(",")[1]) for line in
                  open(os.path.join(FIXTURES, "contract_obd", "users.csv")).readlines()[1:]])
  assert manifest["ingest"]["out_of_vocabulary"] == {"user_age_bucket": int((raw >= 7).sum())}
  stored = world.users["user_age_bucket"].to_numpy()
  assert stored.max() == 7 and (stored == np.minimum(raw, 7)).all()
  assert world.schema["user_region"].vocab_size == 16
  assert world.schema["user_item_affinity_0"].availability == S.PRIVILEGED_CROSS
  assert "item_price" not in world.schema.names and "conversion" not in world.schema.names


def test_an_edited_declared_schema_is_refused_as_a_changed_hash(tmp_path):
  _ingest(tmp_path, "contract")
  path = os.path.join(tmp_path, "world", io.MANIFEST)
  manifest = files.read_json(path)
  assert manifest[declared.SCHEMA_DECLARED] is True
  for row in manifest["schema"]:
    if row["name"] == "dwell_seconds":
      row["availability"] = S.SERVING
  files.write_json(path, manifest, indent=1)
  with pytest.raises(ValueError, match="availability 'serving': a pair feature must be "):
    data.load(str(tmp_path / "world"), verify="size")  # the rules catch this edit first
  problems = verify.verify(str(tmp_path / "world"))
  assert any("world_hash does not match" in p for p in problems)
  for row in manifest["schema"]:  # an edit the rules allow: a vocabulary
    if row["name"] == "dwell_seconds":
      row["availability"] = S.PRIVILEGED_POST_CLICK
    if row["name"] == "user_gender":
      row["vocab_size"] = 5
  files.write_json(path, manifest, indent=1)
  with pytest.raises(ValueError, match="world_hash does not match"):
    data.load(str(tmp_path / "world"), verify="size")


def test_declared_schema_rules():
  config = data.WorldConfig(n_users=3, n_items=4, n_categories=2, n_shops=1, n_brands=1,
                            n_days=2, page_size=1, history_len=50)
  good = declared.assemble(config, [S.Feature("user_age", S.CATEGORICAL, S.USER, S.SERVING,
                                              S.PROFILE, vocab_size=5)], [],
                           [S.Feature("dwell", S.NUMERIC, S.PAIR, S.PRIVILEGED_POST_CLICK,
                                      S.EVENT, buckets=(1.0, 2.0))])
  assert declared.problems(good, config) == []
  leaky = S.Schema(tuple(f if f.name != "dwell" else S.Feature(
      "dwell", S.NUMERIC, S.PAIR, S.SERVING, S.EVENT, buckets=(1.0,)) for f in good.features))
  assert "a pair feature must be privileged_cross or privileged_post_click" in " ".join(
      declared.problems(leaky, config))
  no_core = S.Schema(tuple(f for f in good.features if f.name != "hist_item_ids"))
  assert declared.problems(no_core, config) == [
      "schema: core feature 'hist_item_ids' is missing"]


@pytest.mark.parametrize("entry,values,expected", [
    ({"name": "age", "buckets": [18, 25, 35]}, ["7", "18", "30", "73"], [0, 1, 2, 3]),
    ({"name": "level", "cap": 3}, ["0", "2", "9"], [0, 2, 3]),
    ({"name": "job", "vocabulary": ["a", "b"]}, ["b", "a", "zz"], [1, 0, 2]),
    ({"name": "city", "vocabulary": "dense"}, ["x", "y", "x"], [0, 1, 0]),
    ({"name": "year", "buckets": [1950], "missing": "0"}, ["1960", ""], [1, 0]),
])
def test_a_declaration_encodes_raw_values(entry, values, expected):
  spec = declaration.parse("schema.json", "test", entry, "users")
  encoder = declaration.Encoder(spec, "users.csv")
  codes = encoder.encode(np.arange(len(values)) + 2, np.array(values, object), "column")
  assert codes.tolist() == expected


def test_a_hashed_vocabulary_is_stable_and_bounded():
  spec = declaration.parse("schema.json", "test", {"name": "zip", "vocabulary": {"hash": 7}},
                           "users")
  encoder = declaration.Encoder(spec, "users.csv")
  values = np.array([f"z{k}" for k in range(200)], object)
  first = encoder.encode(np.arange(200), values, "zip")
  assert first.min() >= 0 and first.max() < 7 and len(set(first.tolist())) == 7
  assert (encoder.encode(np.arange(200), values, "zip") == first).all()
  assert spec.declared_size() == 7


def test_an_empty_value_without_a_declared_missing_value_names_its_line():
  spec = declaration.parse("schema.json", "test", {"name": "age", "buckets": [18]}, "users")
  with pytest.raises(R.IngestError, match="users.csv:3: age: expected a value"):
    declaration.Encoder(spec, "users.csv").encode(np.array([2, 3]), np.array(["20", ""],
                                                                               object), "age")


def test_the_simulated_worlds_schema_and_hash_are_the_codes(tiny_world_dir):
  """The simulator's world keeps today's schema as its declaration: no schema_declared key,
  and the world_hash of tiny seed 0 is the one main computed before declared schemas."""
  manifest = files.read_json(os.path.join(tiny_world_dir, io.MANIFEST))
  assert declared.SCHEMA_DECLARED not in manifest
  assert manifest["world_hash"] == (
      "1076a2ab756c6837c415b79cbc246ee5c8dcb59d6dd261a84814ca01d573b26c")
  assert io.manifest_world_hash(manifest) == manifest["world_hash"]


# ------------------------------------------------------------ the docs' walk-throughs, run


DOCS = os.path.join(os.path.dirname(FIXTURES), os.pardir, "docs", "real_logs.md")
EXAMPLES = os.path.join(os.path.dirname(FIXTURES), os.pardir, "examples")


def worked_example(name: str):
  """The command lines of one walk-through of docs/real_logs.md, as written there."""
  with open(DOCS) as f:
    text = f.read()
  block = text.split(f"<!-- worked-example: {name} -->")[1].split("<!-- end worked-example")[0]
  return [line for line in block.splitlines() if line.startswith(("python ", "cp "))]


def test_the_walk_throughs_are_complete():
  for name in ("ml-100k", "contract"):
    modules = [line.split()[2] for line in worked_example(name) if line.startswith("python")]
    assert modules == ["data.ingest", "data.verify", "stages.retrieval", "stages.fine",
                       "stages.coarse", "stages.coarse", "experiments.audit",
                       "experiments.replay", "experiments.replay", "experiments.compare"]
    replays = [line for line in worked_example(name) if "experiments.replay" in line]
    assert "--coarse_variant" not in replays[0] and "--rank_by" not in replays[0]


@pytest.mark.slow
@pytest.mark.parametrize("name,fixture,input_name", [("ml-100k", "ml-100k", "ml-100k"),
                                                     ("contract", "contract_obd", "impressions")])
def test_the_docs_walk_through_runs_end_to_end(name, fixture, input_name, tmp_path,
                                                monkeypatch):
  """The user's files in place (ML-100K's without the mapping, which the walk-through copies
  from examples/), then every command of the walk-through as written, each exiting 0."""
  monkeypatch.chdir(tmp_path)
  shutil.copytree(os.path.join(FIXTURES, fixture), input_name)
  if name == "ml-100k":
    os.remove(os.path.join(input_name, "recbole.json"))
  os.symlink(os.path.abspath(EXAMPLES), "examples")
  outputs = []
  for line in worked_example(name):
    argv = shlex.split(line)
    if argv[0] == "cp":
      shutil.copy(argv[1], argv[2])
      continue
    module = {"data.ingest": "data.ingest.__main__"}.get(argv[2], argv[2])
    code, stdout, stderr = run_in_process(module, argv[3:])
    assert code == 0, f"{line}\n{stdout}\n{stderr}"
    outputs.append(stdout)
  assert outputs[1].strip().endswith("intact")
  assert "replay default: --cvr_variant=none" in outputs[7]
  assert "replay default: --rank_by=ctr (no fine CVR model)" in outputs[7]
  assert "replay default: --coarse_variant=pfd" in outputs[7]
  runs = sorted(os.listdir(os.path.join("runs", os.listdir("runs")[0])))
  assert runs == ["baseline", "pfd"]
  summary = files.read_json(os.path.join("runs", os.listdir("runs")[0], "pfd", "summary.json"))
  assert summary["has_oracle"] is False and summary["config"]["rank_by"] == "ctr"
  assert summary["metrics"]["offline/fine_ctr_auc"] is not None
  assert summary["metrics"]["cascade/kendall_tau"] is not None
  report = os.path.join("reports", os.listdir("reports")[0], "report.md")
  assert "no fine CVR model" in open(report).read()
