"""`--source=aliccp`: Ali-CCP (Alibaba Click and Conversion Prediction; Ma et al., SIGIR 2018).

Input: sample_skeleton_{train,test}.csv and common_features_{train,test}.csv, comma-separated,
no header. A skeleton row is `sample_id,click,buy,md5,feature_num,feature_list`; a common
row is `md5,feature_num,feature_list`. A feature list is entries `field\\x02id\\x03value`
separated by `\\x01`; the skeleton's md5 joins it to the common features (user and context).

Mapping onto the project's slots (docs/real_logs.md):
  user_id 101; user_gender 124, user_age_bucket 125, user_power_level 126 (codes in order of
  appearance); item_id 205, item_category 206, item_shop 207, item_brand 216; position 301;
  labels click and buy (conversion). The combination fields 508 (user category x item
  category), 509 (shop), 702 (brand) and 853 (intention) are the privileged cross features:
  the sum of each field's values fills cross_clicks_cate_24h, cross_clicks_shop_24h,
  cross_clicks_brand_24h and cross_views_item_7d (an approximation: they are Alibaba's own
  user x item counters, not 24h windows). A request is one common-feature record (md5) of
  one split. Ali-CCP has no timestamps: the train split is day 1, the test split day 2, and
  every impression of a day sits at the day's first second, so point-in-time features never
  see the same day.
"""

from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from data import schema as S
from data.ingest import report as R
from data.ingest import world_builder as W
from data.ingest.feature_lists import FeatureLists

SPLITS = (("train", 1), ("test", 2))
SKELETON_COLUMNS = ["sample_id", "click", "buy", "md5", "feature_num", "feature_list"]
COMMON_COLUMNS = ["md5", "feature_num", "feature_list"]
USER_FIELDS = {"101": S.USER_ID, "124": "user_gender", "125": "user_age_bucket",
               "126": "user_power_level"}
ITEM_FIELDS = {"205": S.ITEM_ID, "206": "item_category", "207": "item_shop",
               "216": "item_brand", "301": S.POSITION}
CROSS_FIELDS = {"508": "cross_clicks_cate_24h", "509": "cross_clicks_shop_24h",
                "702": "cross_clicks_brand_24h", "853": "cross_views_item_7d"}
FIELDS = list(USER_FIELDS) + list(ITEM_FIELDS) + list(CROSS_FIELDS)


def _feature_lists(path: str, chunk: pd.DataFrame) -> FeatureLists:
  """The chunk's feature lists, checked (a malformed one or a wrong feature_num raises)."""
  return FeatureLists(path, chunk["_line"].to_numpy(), chunk["feature_list"],
                      chunk["feature_num"].to_numpy(), FIELDS)


class _Codes:
  """Per-field dense codes shared by both splits."""

  def __init__(self, fields: List[str]):
    self.by_field = {f: R.Codes() for f in fields}

  def encode(self, field: str, lists: FeatureLists) -> np.ndarray:
    """Codes of the field's first id in each row (-1 where the row lacks the field)."""
    rows, ids = lists.first_ids(field)
    out = np.full(lists.n, -1, np.int64)
    if len(rows):
      out[rows] = self.by_field[field].encode(ids)
    return out


def _read_common(path: str, split: str, codes: _Codes, report: R.RowReport,
                 chunk_rows: int) -> Tuple[pd.Index, Dict[str, np.ndarray]]:
  """md5 keys of one split and the user columns of each (user_id -1 where absent)."""
  keys: List[np.ndarray] = []
  columns: Dict[str, List[np.ndarray]] = {name: [] for name in USER_FIELDS.values()}
  name = f"common_features_{split}"
  for chunk in R.read_csv_chunks(path, COMMON_COLUMNS, header=False, dtype=str,
                                 chunk_rows=chunk_rows):
    report.add_read(name, len(chunk))
    lists = _feature_lists(path, chunk)
    keys.append(chunk["md5"].to_numpy(str))
    for field, column in USER_FIELDS.items():
      columns[column].append(codes.encode(field, lists))
  index = pd.Index(np.concatenate(keys) if keys else np.zeros(0, str))
  out = {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in columns.items()}
  duplicate = index.duplicated()
  report.drop(name, "duplicate md5 (first kept)", int(duplicate.sum()))
  report.drop(name, "no user id (field 101)", int(((out[S.USER_ID] < 0) & ~duplicate).sum()))
  keep = ~duplicate & (out[S.USER_ID] >= 0)
  report.keep(name, int(keep.sum()))
  return index[keep], {k: v[keep] for k, v in out.items()}


def _read_skeleton(path: str, split: str, day: int, common: pd.Index,
                   users: Dict[str, np.ndarray], codes: _Codes, report: R.RowReport,
                   chunk_rows: int) -> Dict[str, np.ndarray]:
  """Kept impressions of one split: ids, labels, position and the cross sums."""
  name = f"sample_skeleton_{split}"
  parts: Dict[str, list] = {}
  for chunk in R.read_csv_chunks(path, SKELETON_COLUMNS, header=False, dtype=str,
                                 chunk_rows=chunk_rows):
    report.add_read(name, len(chunk))
    lines = chunk["_line"].to_numpy()
    lists = _feature_lists(path, chunk)
    out = {S.CLICK: R.check_labels(path, lines, chunk["click"].to_numpy(), "click"),
           S.CONVERSION: R.check_labels(path, lines, chunk["buy"].to_numpy(), "buy")}
    row = common.get_indexer(chunk["md5"].to_numpy(str))
    for field, column in ITEM_FIELDS.items():
      out[column] = codes.encode(field, lists)
    for field, column in CROSS_FIELDS.items():
      out[column] = lists.sums(field)
    out[S.REQUEST_ID] = row * 2 + (day - 1)  # one request per (md5, split)
    out[S.USER_ID] = np.where(row >= 0, users[S.USER_ID][row], -1)
    keep = row >= 0
    report.drop(name, "md5 not in common_features (or its record has no user)",
                int((~keep).sum()))
    no_item = keep & (out[S.ITEM_ID] < 0)
    report.drop(name, "no item id (field 205)", int(no_item.sum()))
    keep &= ~no_item
    report.keep(name, int(keep.sum()))
    for column, values in out.items():
      parts.setdefault(column, []).append(values[keep])
  out = {k: np.concatenate(v) for k, v in parts.items()}
  n = len(out.get(S.REQUEST_ID, ()))
  out[S.DAY] = np.full(n, day, np.int64)
  out[S.TIMESTAMP] = np.full(n, (day - 1) * 86_400, np.int64)
  out[S.POSITION] = np.maximum(out.get(S.POSITION, np.zeros(n, np.int64)), 0)
  return out


def _entities(impressions, users_by_split) -> Tuple[dict, dict]:
  """Users (profile of their first common record) and items (first sighting)."""
  users = {k: np.concatenate([u[k] for u in users_by_split]) for k in USER_FIELDS.values()}
  _, first = np.unique(users[S.USER_ID], return_index=True)
  users = {k: np.maximum(v[first], 0) for k, v in users.items()}
  _, first = np.unique(impressions[S.ITEM_ID], return_index=True)
  items = {k: np.maximum(impressions[k][first], 0) for k in
           (S.ITEM_ID, "item_category", "item_shop", "item_brand")}
  return users, items


def read_aliccp(input_dir: str, chunk_rows: int = R.CHUNK_ROWS
                ) -> Tuple[W.LogTables, R.RowReport]:
  """Reads both splits of Ali-CCP into canonical tables."""
  report = R.RowReport()
  codes = _Codes(list(USER_FIELDS) + list(ITEM_FIELDS))
  paths = {(kind, split): R.require_file(input_dir, f"{kind}_{split}.csv",
                                         f"Ali-CCP's {kind}_{split}.csv")
           for kind in ("common_features", "sample_skeleton") for split, _ in SPLITS}
  parts, users_by_split, offset = [], [], 0
  for split, day in SPLITS:
    common, users = _read_common(paths["common_features", split], split, codes, report,
                                 chunk_rows)
    impressions = _read_skeleton(paths["sample_skeleton", split], split, day, common, users,
                                 codes, report, chunk_rows)
    impressions[S.REQUEST_ID] = impressions[S.REQUEST_ID] // 2 + offset
    offset += len(common)
    parts.append(impressions)
    users_by_split.append(users)
  impressions = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  pairs = pd.DataFrame({"r": impressions[S.REQUEST_ID], "i": impressions[S.ITEM_ID]})
  duplicate = pairs.duplicated().to_numpy()
  report.drop("impressions", "duplicate (request, item): first kept", int(duplicate.sum()))
  impressions = {k: v[~duplicate] for k, v in impressions.items()}
  users, items = _entities(impressions, users_by_split)
  facts = {"source": "aliccp", "days": {"1": "train split", "2": "test split"},
           "approximations": ["no timestamps: each split is one day, every impression at the "
                              "day's first second",
                              "combination fields 508/509/702/853 (value sums) fill the four "
                              "privileged_cross slots",
                              "no price: item_price is 0", "no post-click signals"]}
  return W.LogTables(impressions, users, items, None, facts), report
