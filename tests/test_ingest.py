"""data.ingest: real logs into worlds without an oracle.

The fixtures under tests/fixtures/<source>/ are written in each source's exact format
(tests/fixtures/make_fixtures.py). The fast tests convert them, break them one way at a time
(each error names the file and line, and nothing is written), and prove the point-in-time
cross features never count an event at or after the impression. The slow test trains every
stage on an ingested world, audits the exports and replays it (offline metrics only).
"""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

import data
from data import verify
from data.ingest import aliccp
from data.ingest import contract
from data.ingest import report as R
from data.ingest import spool as SP
from data.ingest import taobao_ad
from data.ingest import world_builder as W
from data.ingest.__main__ import IngestConfig
from data.ingest.__main__ import ingest
from data.world import schema as S

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _copy(tmp_path, source):
  path = str(tmp_path / source)
  shutil.copytree(os.path.join(FIXTURES, source), path)
  return path


def _ingest(source, input_dir, world_dir):
  return ingest(IngestConfig(source=source, input=input_dir, world_dir=str(world_dir),
                             chunk_rows=97))  # several chunks even on the fixtures


def _rewrite_line(path, line, edit):
  with open(path, newline="") as f:
    lines = f.readlines()
  lines[line - 1] = edit(lines[line - 1])
  with open(path, "w", newline="") as f:
    f.writelines(lines)


@pytest.mark.parametrize("source", ["contract", "aliccp", "taobao_ad", "kuairand", "recbole"])
def test_fixture_converts_to_an_intact_world_without_an_oracle(source, tmp_path):
  world_dir = tmp_path / "world"
  manifest = _ingest(source, os.path.join(FIXTURES, source), world_dir)
  assert verify.verify(str(world_dir)) == []
  assert manifest["has_oracle"] is False
  assert not os.path.exists(world_dir / "truth")
  world = data.load(str(world_dir))
  assert not world.has_oracle
  with pytest.raises(ValueError, match="no oracle"):
    world.oracle  # noqa: B018
  logs = world.log_arrays(world.days)
  assert len(logs[S.REQUEST_ID]) == sum(c["impressions"] for c in manifest["row_counts"].values())
  assert set(np.unique(logs[S.CLICK])) <= {0.0, 1.0}
  rows = manifest["ingest"]["rows"]
  assert all(entry["read"] >= entry["kept"] for entry in rows.values())


def test_aliccp_splits_become_days_and_combination_fields_privileged_cross(tmp_path):
  world_dir = tmp_path / "world"
  manifest = _ingest("aliccp", os.path.join(FIXTURES, "aliccp"), world_dir)
  assert manifest["days"] == [1, 2]
  world = data.load(str(world_dir))
  logs = world.log_arrays([1, 2])
  for slot in aliccp.CROSS_FIELDS.values():
    assert world.schema[slot].availability == S.PRIVILEGED_CROSS
  assert logs["cross_category_weight"].max() > 0  # field 508's values arrived
  assert manifest["row_counts"]["1"]["impressions"] == 480
  assert manifest["row_counts"]["2"]["impressions"] == 200


def test_contract_counts_rows_it_drops_by_reason(tmp_path):
  input_dir = _copy(tmp_path, "contract")
  with open(os.path.join(input_dir, "impressions.csv"), "a") as f:
    f.write("d2r999,u001,i999,1700180000,0,0,0,0.0,0\n")  # an item the items file lacks
  manifest = _ingest("contract", input_dir, tmp_path / "world")
  dropped = manifest["ingest"]["rows"]["impressions"]["dropped"]
  assert dropped == {"item_id not in the items file": 1}
  assert manifest["ingest"]["rows"]["impressions"]["read"] == 721


def _bad_contract(tmp_path, name, edit, line):
  input_dir = _copy(tmp_path, "contract")
  _rewrite_line(os.path.join(input_dir, name), line, edit)
  return input_dir


@pytest.mark.parametrize("name,line,edit,expected", [
    ("impressions.csv", 1, lambda s: s.replace("clicked", "clk"), "missing \\['clicked'\\]"),
    ("impressions.csv", 7, lambda s: s.rsplit(",", 4)[0] + ",2,0,0.0,0\n", "click.*0 or 1"),
    ("impressions.csv", 3, lambda s: s.replace(",1700", ",1600", 1),
     "goes backwards inside its request: expected at least 1700"),
    ("users.csv", 4, lambda s: "u003,old,F,1\n", "integer"),
])
def test_bad_contract_input_names_file_and_line_and_writes_nothing(tmp_path, name, line, edit,
                                                                    expected):
  input_dir = _bad_contract(tmp_path, name, edit, line)
  world_dir = tmp_path / "world"
  with pytest.raises(R.IngestError, match=expected) as error:
    _ingest("contract", input_dir, world_dir)
  assert error.value.path.endswith(name)
  assert error.value.line == line
  assert not os.path.exists(world_dir)
  assert not [p for p in os.listdir(tmp_path) if p.startswith((".world", ".ingest-spool"))]


def test_missing_file_of_the_set_is_named(tmp_path):
  input_dir = _copy(tmp_path, "aliccp")
  os.remove(os.path.join(input_dir, "sample_test", "common_features_test.csv"))
  with pytest.raises(R.IngestError, match="common_features_test.csv: missing file"):
    _ingest("aliccp", input_dir, tmp_path / "world")
  assert not os.path.exists(tmp_path / "world")


def _with_entry(line, entry):
  """An Ali-CCP skeleton line with one more feature entry (and feature_num raised)."""
  head = line.split(",", 5)
  head[4] = str(int(head[4]) + 1)
  head[5] = head[5].rstrip("\n") + "\x01" + entry + "\n"
  return ",".join(head)


@pytest.mark.parametrize("name,edit,expected", [
    ("sample_skeleton_train.csv", lambda s: s.replace("\x03", ":", 1), "malformed feature list"),
    ("sample_skeleton_test.csv", lambda s: ",".join([s.split(",", 2)[0], "2",
                                                      s.split(",", 2)[2]]), "click must be 0"),
    ("common_features_train.csv", lambda s: s.replace(",60,", ",61,", 1), "feature_num says 61"),
    ("sample_skeleton_train.csv", lambda s: _with_entry(s, "508\x029500\x031.2.3"),
     "field 508: expected a number"),
])
def test_bad_aliccp_input_names_file_and_line(tmp_path, name, edit, expected):
  input_dir = _copy(tmp_path, "aliccp")
  split = "train" if "train" in name else "test"
  _rewrite_line(os.path.join(input_dir, f"sample_{split}", name), 5, edit)
  with pytest.raises(R.IngestError, match=expected) as error:
    _ingest("aliccp", input_dir, tmp_path / "world")
  assert error.value.path.endswith(name) and error.value.line == 5
  assert not os.path.exists(tmp_path / "world")


@pytest.mark.parametrize("source,name,edit,expected", [
    ("taobao_ad", "raw_sample.csv", lambda s: s[:-2] + "3\n", "clk must be 0 or 1"),
    ("taobao_ad", "behavior_log.csv", lambda s: s.replace(",pv,", ",look,"), "btag must be"),
    ("kuairand", "log_standard_4_08_to_4_21_1k.csv",
     lambda s: ",".join(s.split(",")[:5] + ["yes"] + s.split(",")[6:]), "is_click must be"),
])
def test_bad_adapter_input_names_file_and_line(tmp_path, source, name, edit, expected):
  input_dir = _copy(tmp_path, source)
  _rewrite_line(os.path.join(input_dir, name), 2, edit)
  with pytest.raises(R.IngestError, match=expected) as error:
    _ingest(source, input_dir, tmp_path / "world")
  assert error.value.path.endswith(name) and error.value.line == 2
  assert not os.path.exists(tmp_path / "world")


def test_kuairand_timestamp_going_backwards_inside_a_request_names_file_and_line(tmp_path):
  """Lines 2-5 of the fixture are one request (user 0, 2022-04-08, hourmin 0), 1.5s apart."""
  input_dir = _copy(tmp_path, "kuairand")
  name = "log_standard_4_08_to_4_21_1k.csv"
  _rewrite_line(os.path.join(input_dir, name), 4,
                lambda s: s.replace(",1649349963000,", ",1649349958000,"))
  with pytest.raises(R.IngestError, match="1649349958 goes backwards inside its request: "
                     "expected at least 1649349961.*line 3") as error:
    _ingest("kuairand", input_dir, tmp_path / "world")
  assert error.value.path.endswith(name) and error.value.line == 4
  assert not os.path.exists(tmp_path / "world")
  assert not [p for p in os.listdir(tmp_path) if p.startswith((".world", ".ingest-spool"))]


@pytest.mark.parametrize("source,name", [("taobao_ad", "raw_sample.csv"),
                                         ("recbole", "ml-fixture.inter")])
def test_a_request_of_user_and_time_cannot_go_backwards(tmp_path, source, name):
  """taobao_ad and recbole define a request as one (user, timestamp): with every data line in
  reverse order (each user's rows going back in time) the world is the same set of requests,
  each at one time."""
  input_dir = _copy(tmp_path, source)
  path = os.path.join(input_dir, name)
  with open(path, newline="") as f:
    lines = f.readlines()
  with open(path, "w", newline="") as f:
    f.writelines(lines[:1] + lines[:0:-1])
  forward = _ingest(source, os.path.join(FIXTURES, source), tmp_path / "forward")
  backward = _ingest(source, input_dir, tmp_path / "backward")
  assert forward["row_counts"] == backward["row_counts"]
  logs = data.load(str(tmp_path / "backward")).log_arrays(backward["days"])
  times = {}
  for request, t in zip(logs[S.REQUEST_ID].tolist(), logs[S.TIMESTAMP].tolist()):
    assert times.setdefault(request, t) == t


def test_recbole_refuses_a_file_without_an_atomic_header(tmp_path):
  input_dir = _copy(tmp_path, "recbole")
  shutil.copy(os.path.join(FIXTURES, "contract", "impressions.csv"),
              os.path.join(input_dir, "ml-fixture.inter"))
  with pytest.raises(R.IngestError, match="ml-fixture.inter:1: expected a RecBole atomic"):
    _ingest("recbole", input_dir, tmp_path / "world")


def test_recbole_labels_come_from_the_rating_threshold(tmp_path):
  _ingest("recbole", os.path.join(FIXTURES, "recbole"), tmp_path / "world")
  logs = data.load(str(tmp_path / "world")).log_arrays([1, 2, 3, 4])
  assert 0 < logs[S.CLICK].mean() < 1
  assert (logs[S.CONVERSION] <= logs[S.CLICK]).all()  # rating 5 implies rating >= 4


def test_kuairand_post_click_signals_are_zero_without_a_click(tmp_path):
  _ingest("kuairand", os.path.join(FIXTURES, "kuairand"), tmp_path / "world")
  world = data.load(str(tmp_path / "world"))
  logs = world.log_arrays(world.days)
  unclicked = logs[S.CLICK] == 0
  post_click = [f.name for f in world.schema.with_availability({S.PRIVILEGED_POST_CLICK})]
  assert post_click == ["dwell_seconds", "read_comments", "entered_profile",
                        "followed_author", "liked"]
  for slot in post_click + [S.CONVERSION]:
    assert not logs[slot][unclicked].any(), slot
  assert logs["dwell_seconds"][~unclicked].min() > 0


def test_file_of_another_format_is_refused(tmp_path):
  input_dir = _copy(tmp_path, "aliccp")
  shutil.copy(os.path.join(FIXTURES, "contract", "impressions.csv"),
              os.path.join(input_dir, "sample_train", "sample_skeleton_train.csv"))
  with pytest.raises(R.IngestError, match="sample_skeleton_train.csv:1"):
    _ingest("aliccp", input_dir, tmp_path / "world")


def test_contract_refuses_a_privileged_column_declared_serving(tmp_path):
  input_dir = _copy(tmp_path, "contract")
  path = os.path.join(input_dir, contract.SCHEMA_FILE)
  with open(path) as f:
    schema = json.load(f)
  for column in schema["columns"]:
    if column.get("slot") == "dwell_seconds":
      column["availability"] = S.SERVING
  with open(path, "w") as f:
    json.dump(schema, f)
  with pytest.raises(R.IngestError, match="does not match slot dwell_seconds"):
    _ingest("contract", input_dir, tmp_path / "world")


def _world_from_arrays(tmp_path, impressions, users, items, behaviour=None):
  """A world written from in-memory canonical tables, through the spools as the adapters do."""
  spool = SP.ImpressionSpool(str(tmp_path / "spool" / "impressions"), SP.UNIX_DAYS)
  n = len(impressions[S.REQUEST_ID])
  spool.add_rows(dict(impressions, **{SP.FILE: np.zeros(n, np.int16),
                                      SP.LINE: np.arange(2, n + 2)}))
  events = None
  if behaviour is not None:
    events = SP.BehaviourSpool(str(tmp_path / "spool" / "behaviour"))
    events.add_events(behaviour)
  tables = W.LogTables(spool, users, items, [W.InputFile("impressions.csv", "impressions")],
                       events)
  W.write_world(str(tmp_path / "world"), tables, R.RowReport())
  return data.load(str(tmp_path / "world"))


def test_cross_features_count_no_event_at_or_after_the_impression(tmp_path):
  """Behaviour events in the item's category at t - 2h, t - 1s, t, t + 1s and t + 1h: only
  the two before t count, on the day it happens and across a day boundary."""
  day0 = 1_700_006_400
  t = day0 + 86_400 + 600  # day 2, 00:10
  offsets = np.array([-7200, -1, 0, 1, 3600])
  behaviour = {S.USER_ID: np.zeros(5, np.int64), S.ITEM_ID: np.ones(5, np.int64),
               S.TIMESTAMP: t + offsets}
  impressions = {S.REQUEST_ID: np.array([0, 1]), S.USER_ID: np.array([0, 0]),
                 S.ITEM_ID: np.array([0, 0]), S.TIMESTAMP: np.array([day0 + 5, t]),
                 S.CLICK: np.array([1, 1])}
  items = {S.ITEM_ID: np.array([0, 1]), "item_category": np.array([3, 3]),
           "item_shop": np.array([0, 1]), "item_brand": np.array([0, 0])}
  users = {S.USER_ID: np.array([0])}
  world = _world_from_arrays(tmp_path, impressions, users, items, behaviour)
  imp = world.log_arrays(world.days)
  assert imp["cross_clicks_cate_24h"].tolist() == [0.0, 2.0]
  assert imp["cross_clicks_brand_24h"].tolist() == [0.0, 2.0]
  assert imp["cross_views_item_7d"].tolist() == [0.0, 1.0]  # the first impression only
  assert world.request_arrays(world.days)["hist_len"].tolist() == [0.0, 1.0]  # not its own


def test_impressions_of_a_request_share_its_first_timestamp(tmp_path):
  impressions = {S.REQUEST_ID: np.array([0, 0, 1]), S.USER_ID: np.array([0, 0, 0]),
                 S.ITEM_ID: np.array([0, 1, 0]),
                 S.TIMESTAMP: np.array([1_700_000_000, 1_700_000_009, 1_700_090_000]),
                 S.CLICK: np.array([0, 1, 0])}
  world = _world_from_arrays(tmp_path, impressions, {S.USER_ID: np.array([0])},
                             {S.ITEM_ID: np.array([0, 1])})
  imp = world.log_arrays(world.days)
  assert imp[S.TIMESTAMP][0] == imp[S.TIMESTAMP][1]
  assert imp[S.DAY].tolist() == [1, 1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["contract", "aliccp", "taobao_ad", "kuairand", "recbole"])
def test_every_stage_trains_on_an_ingested_world_and_replay_reports_offline_only(source,
                                                                                 tmp_path):
  from experiments import audit
  from experiments import funnel as funnel_lib
  from experiments import replay as replay_lib
  from experiments import replay_defaults
  from stages import coarse
  from stages import config as config_lib
  from stages import fine
  from stages import retrieval
  world_dir, model_dir = str(tmp_path / "world"), str(tmp_path / "models")
  _ingest(source, os.path.join(FIXTURES, source), world_dir)
  tiny = dict(world_dir=world_dir, model_dir=model_dir, hidden_units=(16,), embedding_dim=4,
              batch_size=64, max_steps=10)
  world = data.load(world_dir)
  # A source without post-click signals (Ali-CCP, RecBole here) declares none: no CVR teacher.
  cvr_variant = "pfd" if world.schema.privileged_features("fine_cvr") else "baseline"
  retrieval.train(config_lib.RetrievalConfig(**tiny))
  fine.train(config_lib.FineConfig(task="ctr", **tiny))
  fine.train(config_lib.FineConfig(task="cvr", variant=cvr_variant, **tiny))
  coarse.train(config_lib.CoarseConfig(variant="pfd_md", teacher_variant="baseline", **tiny))
  findings = audit.audit(audit.AuditConfig(model_dir=model_dir))
  assert findings and all(finding.ok for finding in findings)
  config = replay_lib.ReplayConfig(world_dir=world_dir, model_dir=model_dir,
                                   run_dir=str(tmp_path / "run"), coarse_variant="pfd_md",
                                   cvr_variant=cvr_variant)
  config, funnel, _ = replay_defaults.resolve(  # rank by what the world has (no prices: ctcvr)
      world, config, funnel_lib.Funnel(retrieval=20, coarse=10, page=4),
      given=["coarse_variant", "cvr_variant", "funnel"])
  summary = replay_lib.replay(world, funnel, config)
  assert summary["has_oracle"] is False
  assert summary["metrics"]["online/exp_clicks_per_1k"] is None
  assert "online/exp_clicks_per_1k" in summary["unavailable"]
  assert summary["metrics"]["offline/fine_ctr_auc"] is not None
  assert "offline metrics only" in replay_lib.format_table(summary)


def test_taobao_behaviour_counts_only_before_for_cross_and_only_after_for_post_click():
  """pv events at t - 1h, t and t + 1h in the ad's category: the cross counter sees one; a
  cart at t (the impression's own second) is not a post-click cart, one at t + 1h is."""
  t = 1_494_100_000
  ads = {"item_category": np.array([0]), "item_brand": np.array([0])}
  tags = np.array(sorted(taobao_ad.BTAGS))
  cart = int(np.searchsorted(tags, "cart"))
  pv = int(np.searchsorted(tags, "pv"))
  events = {S.USER_ID: np.zeros(5, np.int64), S.TIMESTAMP: t + np.array([-3600, 0, 3600, 0, 3600]),
            "btag": np.array([pv, pv, pv, cart, cart]), "cate": np.zeros(5, np.int64),
            "brand": np.zeros(5, np.int64)}
  samples = {S.USER_ID: np.array([0]), S.TIMESTAMP: np.array([t]), S.ITEM_ID: np.array([0]),
             S.CLICK: np.array([1])}
  taobao_ad._behaviour_features(samples, ads, events)
  assert samples["cross_clicks_cate_24h"].tolist() == [1.0]
  assert samples["added_to_cart"].tolist() == [1]
  events[S.TIMESTAMP] = t + np.array([-3600, 0, 3600, 0, 0])  # no cart after t
  taobao_ad._behaviour_features(samples, ads, events)
  assert samples["added_to_cart"].tolist() == [0]


def test_aliccp_feature_lists_match_a_python_loop_per_row():
  """Vectorised first ids and value sums equal the per-row reference, with fields that share a
  prefix (508 / 5080 / 50), repeated fields, absent fields and long values."""
  from data.ingest.feature_lists import FeatureLists
  rng = np.random.default_rng(0)
  fields = ["508", "5080", "50", "853", "109_14", "205"]
  lists = []
  for _ in range(300):
    entries = [(fields[rng.integers(len(fields))],
                str(rng.integers(0, 10**int(rng.integers(1, 12)))),
                repr(float(np.round(rng.lognormal(0, 4), int(rng.integers(0, 9))))))
               for _ in range(rng.integers(1, 9))]
    lists.append("\x01".join(f"{f}\x02{i}\x03{v}" for f, i, v in entries))
  parsed = FeatureLists("x.csv", np.arange(300), pd.Series(lists),
                        np.array([s.count("\x01") + 1 for s in lists]), ["508", "50", "853", "205"],
                        ["508", "50", "853", "205"], batch_rows=7)  # in batches, as a long chunk
  for field in ("508", "50", "853", "205"):
    per_row = [[e.split("\x02")[1].split("\x03") for e in s.split("\x01")
                if e.split("\x02")[0] == field] for s in lists]
    expected = np.array([sum(float(v) for _, v in row) for row in per_row], np.float32)
    assert parsed.sums(field).tobytes() == expected.tobytes(), field
    rows, ids = parsed.first_ids(field)
    assert rows.tolist() == [r for r, row in enumerate(per_row) if row]
    assert ids.tolist() == [row[0][0] for row in per_row if row]
