"""`--source=taobao_ad`: the Taobao display-ad click logs (Tianchi dataset 56).

Input, comma-separated with a header: raw_sample.csv (user, time_stamp, adgroup_id, pid,
nonclk, clk), ad_feature.csv (adgroup_id, cate_id, campaign_id, customer, brand, price),
user_profile.csv (userid, cms_segid, cms_group_id, final_gender_code, age_level, pvalue_level,
shopping_level, occupation, new_user_class_level) and behavior_log.csv (user, time_stamp,
btag, cate, brand; btag one of pv, cart, fav, buy).

Mapping (docs/real_logs.md): a request is one (user, time_stamp); the ad (adgroup_id) is the
item, cate_id its category, customer its shop, brand its brand, price its price; age_level,
final_gender_code and pvalue_level the user's age bucket, gender and power level; clk the click.
The logs are Beijing time (2017-05-06 .. 2017-05-13): days are cut in Asia/Shanghai, and the
published test day, 2017-05-13, is the world's default eval day when the log has it.

From behavior_log, point in time (data/world/features.EventCounter):
  privileged_cross: the user's pv + cart + fav events in the ad's category
    (cross_clicks_cate_24h) and brand (cross_clicks_brand_24h) in the 24h before the
    impression; the shop and 7-day view counters come from the logged impressions.
  privileged_post_click (approximations, documented): added_to_cart / favorited = the user
    carted / favourited in the ad's category and brand in the 24h after a click; conversion
    = a buy there in the same window. The behaviour log names no ad, so these are
    category-and-brand proxies, not the ad's own cart, fav and buy.
"""

import datetime
import os
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import numpy as np

from data.ingest import clock as clock_lib
from data.ingest import declaration
from data.ingest import report as R
from data.ingest import spool as SP
from data.ingest import world_builder as W
from data.world import features as F
from data.world import schema as S

if TYPE_CHECKING:  # chunks come from report.read_csv_chunks
  import pandas as pd

SAMPLE_COLUMNS = ["user", "time_stamp", "adgroup_id", "clk"]
AD_COLUMNS = ["adgroup_id", "cate_id", "customer", "brand", "price"]
USER_COLUMNS = ["userid", "final_gender_code", "age_level", "pvalue_level"]
BEHAVIOUR_COLUMNS = ["user", "time_stamp", "btag", "cate", "brand"]
BTAGS = ("pv", "cart", "fav", "buy")
EVENT_COLUMNS = (S.USER_ID, S.TIMESTAMP, "btag", "cate", "brand")
DAY = 86_400
TIMEZONE = "Asia/Shanghai"
TEST_DAY = (datetime.date(2017, 5, 13) - datetime.date(1970, 1, 1)).days  # a local day number


def _slot(name: str) -> declaration.FeatureSpec:
  """A project slot, declared as the project declares it (vocabulary: the data's)."""
  project = declaration.project_feature(name)
  assert project is not None, name
  entity = {S.USER: S.USER, S.ITEM: S.ITEM}.get(project.entity, S.PAIR)
  return declaration.FeatureSpec(name, project.kind, entity, project.availability,
                                 description=project.description)


FEATURES = [_slot(name) for name in (
    "user_age_bucket", "user_gender", "user_power_level", "item_category", "item_shop",
    "item_brand", "item_price", "cross_clicks_cate_24h", "cross_clicks_brand_24h",
    "added_to_cart", "favorited")]


def _ints(path: str, chunk: "pd.DataFrame", column: str, missing: int = -1) -> np.ndarray:
  values = chunk[column].to_numpy(object)
  empty = np.array([v is None or v != v or str(v).strip() in ("", "NULL") for v in values])
  out = np.full(len(values), missing, np.int64)
  if (~empty).any():
    out[~empty] = R.check_integers(path, chunk["_line"].to_numpy()[~empty], values[~empty],
                                   column)
  return out


def _read_ads(path: str, report: R.RowReport, chunk_rows: int,
              codes: Dict[str, R.Codes]) -> Dict[str, np.ndarray]:
  parts: Dict[str, List[np.ndarray]] = {}
  for chunk in R.read_csv_chunks(path, AD_COLUMNS, dtype=str, chunk_rows=chunk_rows):
    report.add_read("ad_feature", len(chunk))
    out = {S.ITEM_ID: codes[S.ITEM_ID].encode(chunk["adgroup_id"].to_numpy()),
           "item_category": codes["cate"].encode(chunk["cate_id"].to_numpy()),
           "item_shop": codes["shop"].encode(chunk["customer"].to_numpy()),
           "item_brand": codes["brand"].encode(chunk["brand"].fillna("NULL").to_numpy()),
           "item_price": declaration.check_numbers(path, chunk["_line"].to_numpy(),
                                                   chunk["price"].to_numpy(), "price"
                                                   ).astype(np.float32)}
    for k, v in out.items():
      parts.setdefault(k, []).append(v)
  rows = {k: np.concatenate(v) for k, v in parts.items()}
  n = len(codes[S.ITEM_ID])
  report.drop("ad_feature", "duplicate adgroup_id (last kept)", len(rows[S.ITEM_ID]) - n)
  report.keep("ad_feature", n)
  ads = {}  # indexed by the ad's code
  for name, values in rows.items():
    ads[name] = np.zeros(n, values.dtype)
    ads[name][rows[S.ITEM_ID]] = values
  return ads


def _read_users(path: str, report: R.RowReport, chunk_rows: int,
                codes: Dict[str, R.Codes]) -> Dict[str, np.ndarray]:
  parts: Dict[str, List[np.ndarray]] = {}
  for chunk in R.read_csv_chunks(path, USER_COLUMNS, dtype=str, chunk_rows=chunk_rows):
    report.add_read("user_profile", len(chunk))
    out = {S.USER_ID: codes[S.USER_ID].encode(chunk["userid"].to_numpy()),
           "user_gender": np.maximum(_ints(path, chunk, "final_gender_code", 1) - 1, 0),
           "user_age_bucket": np.maximum(_ints(path, chunk, "age_level", 0), 0),
           "user_power_level": np.maximum(_ints(path, chunk, "pvalue_level", 0), 0)}
    for k, v in out.items():
      parts.setdefault(k, []).append(v)
  users = {k: np.concatenate(v) for k, v in parts.items()}
  report.keep("user_profile", len(users[S.USER_ID]))
  return users


def _read_samples(path: str, report: R.RowReport, chunk_rows: int, codes: Dict[str, R.Codes],
                  n_ads: int, staging: SP.DaySpool) -> None:
  """Streams raw_sample's rows of known ads into `staging`, by UTC day."""
  for chunk in R.read_csv_chunks(path, SAMPLE_COLUMNS, dtype=str, chunk_rows=chunk_rows):
    report.add_read("raw_sample", len(chunk))
    lines = chunk["_line"].to_numpy()
    out = {S.USER_ID: codes[S.USER_ID].encode(chunk["user"].to_numpy()),
           S.TIMESTAMP: R.check_integers(path, lines, chunk["time_stamp"].to_numpy(),
                                         "time_stamp"),
           S.ITEM_ID: codes[S.ITEM_ID].lookup(chunk["adgroup_id"].to_numpy()),
           S.CLICK: R.check_labels(path, lines, chunk["clk"].to_numpy(), "clk"),
           SP.LINE: lines}
    known = (out[S.ITEM_ID] >= 0) & (out[S.ITEM_ID] < n_ads)
    report.drop("raw_sample", "adgroup_id not in ad_feature", int((~known).sum()))
    report.keep("raw_sample", int(known.sum()))
    staging.add(out[S.TIMESTAMP][known] // DAY, {k: v[known] for k, v in out.items()})


def _read_behaviour(path: str, report: R.RowReport, chunk_rows: int, codes: Dict[str, R.Codes],
                    events: SP.DaySpool) -> None:
  """Streams the events of known users in known categories / brands into `events`, by UTC
  day (others dropped, counted)."""
  for chunk in R.read_csv_chunks(path, BEHAVIOUR_COLUMNS, dtype=str, chunk_rows=chunk_rows):
    report.add_read("behavior_log", len(chunk))
    lines = chunk["_line"].to_numpy()
    btag = chunk["btag"].to_numpy(str)
    bad = ~np.isin(btag, BTAGS)
    if bad.any():
      i = int(np.argmax(bad))
      raise R.IngestError(path, int(lines[i]), f"btag must be one of {list(BTAGS)}, got "
                          f"{btag[i]!r}")
    out = {S.USER_ID: codes[S.USER_ID].lookup(chunk["user"].to_numpy()),
           S.TIMESTAMP: R.check_integers(path, lines, chunk["time_stamp"].to_numpy(),
                                         "time_stamp"),
           "btag": np.searchsorted(np.array(sorted(BTAGS)), btag),
           "cate": codes["cate"].lookup(chunk["cate"].to_numpy()),
           "brand": codes["brand"].lookup(chunk["brand"].fillna("NULL").to_numpy())}
    out["brand"][chunk["brand"].fillna("NULL").to_numpy(str) == "NULL"] = -1  # matches no ad
    known = out[S.USER_ID] >= 0
    report.drop("behavior_log", "user not in raw_sample", int((~known).sum()))
    useless = known & (out["cate"] < 0) & (out["brand"] < 0)
    report.drop("behavior_log", "category and brand of no ad", int(useless.sum()))
    keep = known & ~useless
    report.keep("behavior_log", int(keep.sum()))
    events.add(out[S.TIMESTAMP][keep] // DAY, {k: v[keep] for k, v in out.items()})


def _window_counts(events: Dict[str, np.ndarray], mask: np.ndarray, key: str, n_keys: int,
                   query_keys: np.ndarray, query_t: np.ndarray, start: int,
                   stop: int) -> np.ndarray:
  """Events of `key` (where `mask`) in [t + start, t + stop) per query; unknown keys -> 0."""
  valid = mask & (events[key] >= 0)
  origin = int(min(events[S.TIMESTAMP].min(initial=0), query_t.min(initial=0))) - 2 * DAY
  span = int(max(events[S.TIMESTAMP].max(initial=0), query_t.max(initial=0))) - origin + 3 * DAY
  keys = events[S.USER_ID][valid] * n_keys + events[key][valid]
  n_composite = int(max(keys.max(initial=0), query_keys.max(initial=0))) + 1
  counter = F.EventCounter(keys, events[S.TIMESTAMP][valid] - origin, n_composite, span)
  counts = counter.count(np.maximum(query_keys, 0), query_t + stop - origin, stop - start)
  return np.where(query_keys >= 0, counts, 0)


def _behaviour_features(samples: Dict[str, np.ndarray], ads: Dict[str, np.ndarray],
                        events: Dict[str, np.ndarray]) -> None:
  """The privileged cross and post-click columns and the derived conversion label."""
  order = sorted(BTAGS)
  tag = {name: events["btag"] == order.index(name) for name in BTAGS}
  item = samples[S.ITEM_ID]
  t = samples[S.TIMESTAMP]
  users = samples[S.USER_ID]
  browse = tag["pv"] | tag["cart"] | tag["fav"]
  for key, slot in (("cate", "cross_clicks_cate_24h"), ("brand", "cross_clicks_brand_24h")):
    column = ads["item_category"] if key == "cate" else ads["item_brand"]
    n_keys = int(max(events[key].max(initial=0), column.max(initial=0))) + 1
    samples[slot] = _window_counts(events, browse, key, n_keys, users * n_keys + column[item],
                                   t, -DAY, 0).astype(np.float32)
  clicked = samples[S.CLICK] > 0
  n_brands = int(max(events["brand"].max(initial=0), ads["item_brand"].max(initial=0))) + 1
  events = dict(events, pair=np.where((events["cate"] >= 0) & (events["brand"] >= 0),
                                      events["cate"] * n_brands + events["brand"], -1))
  n_pairs = (int(max(events["cate"].max(initial=0), ads["item_category"].max(initial=0))) + 1
             ) * n_brands
  pair = ads["item_category"][item] * n_brands + ads["item_brand"][item]
  for name, slot in (("cart", "added_to_cart"), ("fav", "favorited"), ("buy", S.CONVERSION)):
    after = _window_counts(events, tag[name], "pair", n_pairs, users * n_pairs + pair, t, 1,
                           DAY + 1)
    samples[slot] = ((after > 0) & clicked).astype(np.int64)


def _with_behaviour(staging: SP.DaySpool, events: SP.DaySpool, ads: Dict[str, np.ndarray],
                    impressions: SP.ImpressionSpool) -> None:
  """Each UTC day's samples with their behaviour features, from the events of the day before,
  the day and the day after (the features' windows are 24h), into the impression spool."""
  for day in staging.partitions():
    samples = staging.read(day)
    window = [events.read(d, EVENT_COLUMNS) for d in (day - 1, day, day + 1)]
    _behaviour_features(samples, ads, {k: np.concatenate([w[k] for w in window])
                                       for k in window[1]})
    samples[SP.REQUEST_A], samples[SP.REQUEST_B] = samples[S.USER_ID], samples[S.TIMESTAMP]
    samples[SP.FILE] = np.zeros(len(samples[S.USER_ID]), np.int16)
    impressions.add_rows(samples)


def read_taobao_ad(input_dir: str, spool_dir: str, chunk_rows: int = R.CHUNK_ROWS,
                   **_: Any) -> Tuple[W.LogTables, R.RowReport]:
  report = R.RowReport()
  codes = {k: R.Codes() for k in (S.USER_ID, S.ITEM_ID, "cate", "shop", "brand")}
  paths = {name: R.require_file(input_dir, f"{name}.csv", f"the Taobao ad logs' {name}.csv")
           for name in ("raw_sample", "ad_feature", "user_profile", "behavior_log")}
  ads = _read_ads(paths["ad_feature"], report, chunk_rows, codes)
  users = _read_users(paths["user_profile"], report, chunk_rows, codes)
  staging = SP.DaySpool(os.path.join(spool_dir, "raw_sample"))
  _read_samples(paths["raw_sample"], report, chunk_rows, codes, len(ads[S.ITEM_ID]), staging)
  events = SP.DaySpool(os.path.join(spool_dir, "behavior_log"))
  _read_behaviour(paths["behavior_log"], report, chunk_rows, codes, events)
  impressions = SP.ImpressionSpool(os.path.join(spool_dir, "impressions"), SP.UNIX_DAYS,
                                   clock_lib.Clock(TIMEZONE))
  _with_behaviour(staging, events, ads, impressions)
  facts = {"source": "taobao_ad", "approximations": [
      "days are Beijing days (Asia/Shanghai); the default eval day is the published test day, "
      "2017-05-13, when the log has it",
      "cross features: pv + cart + fav in the ad's category / brand in the 24h before",
      "added_to_cart, favorited, conversion: cart, fav, buy in the ad's category and brand in "
      "the 24h after a click (the behaviour log names no ad)"]}
  return W.LogTables(impressions, users, ads, [W.InputFile(paths["raw_sample"], "raw_sample")],
                     facts=facts, features=list(FEATURES), eval_day_key=TEST_DAY), report
