"""data.ingest builds a world one day at a time, from rows spilled to disk, in bounded memory.

These tests hold the day-by-day build to what a build over the whole log gives: the derived
point-in-time features equal data/world/features.py run over every day at once (sequences longer
than their 50 slots, 24h and 7-day windows across day boundaries, ties in time and position),
the world does not depend on the chunk size, and the spools keep requests whole and number
them as a global sort would.
"""

import os

import numpy as np
import pytest

import data
from data.ingest import report as R
from data.ingest import spool as SP
from data.ingest import world_builder as W
from data.ingest.__main__ import IngestConfig
from data.ingest.__main__ import ingest
from data.world import features as F
from data.world import schema as S

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
DAY0 = 1_700_006_400  # a UTC midnight
DAY = 86_400


def _log(rng, n_requests=3000, n_users=12, n_items=40, days=12, page=3):
  """Requests in time order on a coarse clock (many ties), `page` impressions each."""
  times = np.sort(rng.integers(0, days * DAY, n_requests) // 900 * 900) + DAY0
  request = np.repeat(np.arange(n_requests), page)
  users = rng.integers(0, n_users, n_requests)
  first_item = rng.integers(0, n_items, n_requests)[request]  # distinct items in a request:
  items = (first_item + np.tile(np.arange(page), n_requests)) % n_items  # a repeat is dropped
  return {S.REQUEST_ID: request, S.USER_ID: users[request],
          S.ITEM_ID: items, S.TIMESTAMP: times[request],
          S.POSITION: np.tile(np.arange(page), n_requests) % 2,  # ties in position too
          S.CLICK: (rng.random(len(request)) < 0.4).astype(np.int64)}


def test_day_by_day_features_equal_the_whole_log_computation(tmp_path):
  rng = np.random.default_rng(0)
  imp = _log(rng)
  items = {S.ITEM_ID: np.arange(40), "item_category": rng.integers(0, 5, 40),
           "item_shop": rng.integers(0, 7, 40), "item_brand": rng.integers(0, 3, 40)}
  n = len(imp[S.REQUEST_ID])
  spool = SP.ImpressionSpool(str(tmp_path / "spool"), SP.UNIX_DAYS)
  for rows in np.array_split(np.arange(n), 7):  # several chunks
    spool.add_rows({k: v[rows] for k, v in imp.items()}
                   | {SP.FILE: np.zeros(len(rows), np.int16), SP.LINE: rows + 2})
  tables = W.LogTables(spool, {S.USER_ID: np.arange(12)}, items,
                       [W.InputFile("impressions.csv", "impressions")])
  W.write_world(str(tmp_path / "world"), tables, R.RowReport())
  world = data.load(str(tmp_path / "world"))
  logs = world.log_arrays(world.days)
  requests = world.request_arrays(world.days)
  order = np.lexsort((imp[S.POSITION], imp[S.REQUEST_ID]))  # a day's logs: by request, position
  assert (logs[S.ITEM_ID] == imp[S.ITEM_ID][order]).all()

  config, span = world.config, F.time_span(world.config)
  t = imp[S.TIMESTAMP] - DAY0
  clicked = imp[S.CLICK] > 0
  item = imp[S.ITEM_ID][clicked]
  sequence = F.ClickSequence(imp[S.USER_ID][clicked], t[clicked], imp[S.POSITION][clicked], item,
                             items["item_category"][item], items["item_shop"][item], span)
  first = np.unique(imp[S.REQUEST_ID], return_index=True)[1]
  expected = sequence.last_before(imp[S.USER_ID][first], t[first], config.history_len)
  assert requests["hist_len"].max() == config.history_len  # the carry was trimmed
  for name, values in expected.items():
    assert (requests[name] == values).all(), name
  counters = F.ClickCounters(config, imp[S.USER_ID][clicked], t[clicked],
                             items["item_category"][item], items["item_shop"][item],
                             items["item_brand"][item], span)
  shown = imp[S.ITEM_ID]
  counts = counters.count(imp[S.USER_ID], t, items["item_category"][shown],
                          items["item_shop"][shown], items["item_brand"][shown])
  for name, values in counts.items():
    assert (logs[name] == values[order]).all(), name
  views = F.view_counter(config, imp[S.USER_ID], shown, t, span)
  expected_views = views.count(imp[S.USER_ID] * config.n_items + shown, t, F.WINDOW_7D)
  assert (logs["cross_views_item_7d"] == expected_views[order]).all()
  assert expected_views.max() > 0 and counts["cross_clicks_cate_24h"].max() > 0


@pytest.mark.parametrize("source", ["contract", "aliccp", "taobao_ad", "kuairand", "recbole"])
def test_the_world_does_not_depend_on_the_chunk_size(source, tmp_path):
  manifests = [ingest(IngestConfig(source=source, input=os.path.join(FIXTURES, source),
                                   world_dir=str(tmp_path / f"world{chunk}"), chunk_rows=chunk))
               for chunk in (23, 1 << 20)]
  assert manifests[0]["files"] == manifests[1]["files"]
  assert manifests[0]["world_hash"] == manifests[1]["world_hash"]
  assert manifests[0]["ingest"] == manifests[1]["ingest"]


def test_a_request_stays_in_the_day_of_its_first_row_across_chunks(tmp_path):
  spool = SP.ImpressionSpool(str(tmp_path / "spool"), SP.UNIX_DAYS)
  base = {S.USER_ID: np.zeros(2, np.int64), S.ITEM_ID: np.array([0, 1])}
  spool.add_rows(base | {S.REQUEST_ID: np.array([7, 8]),
                         S.TIMESTAMP: np.array([DAY0 + DAY - 1, DAY0 + 5])})
  spool.add_rows(base | {S.REQUEST_ID: np.array([7, 9]),  # request 7 after midnight
                         S.TIMESTAMP: np.array([DAY0 + DAY + 3, DAY0 + DAY + 3])})
  assert spool.world_days() == {DAY0 // DAY: 1, DAY0 // DAY + 1: 2}
  assert spool.read(DAY0 // DAY)[S.REQUEST_ID].tolist() == [7, 8, 7]
  assert spool.read(DAY0 // DAY + 1)[S.REQUEST_ID].tolist() == [9]


def test_ranked_request_ids_are_the_rank_of_their_user_time_pair(tmp_path):
  spool = SP.ImpressionSpool(str(tmp_path / "spool"), SP.UNIX_DAYS)
  user = np.array([3, 0, 3, 0, 1])
  t = DAY0 + np.array([DAY + 5, 2 * DAY, 5, 9, 2 * DAY])
  spool.add_rows({S.USER_ID: user, S.ITEM_ID: np.arange(5), S.TIMESTAMP: t,
                  SP.REQUEST_A: user, SP.REQUEST_B: t})
  ids = np.concatenate([spool.request_ids(spool.read(key)) for key in spool.partitions()])
  order = np.concatenate([np.flatnonzero(t // DAY == key) for key in spool.partitions()])
  pairs = sorted(set(zip(user.tolist(), t.tolist())))
  assert ids.tolist() == [pairs.index((user[i], t[i])) for i in order]


def test_a_day_built_in_slices_equals_the_day_built_whole(tmp_path):
  """Days of ~750 rows built in slices of 100 (whole requests in time order, each slice
  counting the day's earlier slices): every column of every impression and request is the
  one the whole-day build gives, only the rows' order (by slice) differs."""
  rng = np.random.default_rng(3)
  imp = _log(rng)
  items = {S.ITEM_ID: np.arange(40), "item_category": rng.integers(0, 5, 40),
           "item_shop": rng.integers(0, 7, 40), "item_brand": rng.integers(0, 3, 40)}
  worlds = []
  for slice_rows in (1 << 20, 100):
    spool = SP.ImpressionSpool(str(tmp_path / f"spool{slice_rows}"), SP.UNIX_DAYS)
    n = len(imp[S.REQUEST_ID])
    for rows in np.array_split(np.arange(n), 5):
      spool.add_rows({k: v[rows] for k, v in imp.items()}
                     | {SP.FILE: np.zeros(len(rows), np.int16), SP.LINE: rows + 2})
    tables = W.LogTables(spool, {S.USER_ID: np.arange(12)}, items,
                         [W.InputFile("impressions.csv", "impressions")])
    manifest = W.write_world(str(tmp_path / f"world{slice_rows}"), tables, R.RowReport(),
                             slice_rows=slice_rows)
    worlds.append((manifest, data.load(str(tmp_path / f"world{slice_rows}"))))
  (whole_manifest, whole), (sliced_manifest, sliced) = worlds
  assert sum(p.startswith("logs/day=03/") for p in sliced_manifest["files"]) > 5
  assert whole_manifest["row_counts"] == sliced_manifest["row_counts"]
  for get, key in ((lambda w: w.log_arrays(w.days), (S.POSITION, S.REQUEST_ID)),
                   (lambda w: w.request_arrays(w.days), (S.REQUEST_ID,))):
    a, b = get(whole), get(sliced)
    order_a = np.lexsort(tuple(a[k] for k in key))
    order_b = np.lexsort(tuple(b[k] for k in key))
    for name in a:
      assert (np.asarray(a[name])[order_a] == np.asarray(b[name])[order_b]).all(), name
