"""`--source=aliccp`: Ali-CCP (Alibaba Click and Conversion Prediction; Ma et al., SIGIR 2018).

Input, as the archives unpack: `sample_train/` holding sample_skeleton_train.csv and
common_features_train.csv, `sample_test/` holding the test split's two files (the four files
side by side in --input work too). Comma-separated, no header. A skeleton row is
`sample_id,click,buy,md5,feature_num,feature_list`; a common row is
`md5,feature_num,feature_list`. A feature list is entries `field\\x02id\\x03value`
separated by `\\x01`; the skeleton's md5 joins it to the common features (user and context;
about 500 entries a record in the real data, read in chunks of bounded bytes).

Mapping (docs/real_logs.md): user_id 101; user_gender 124, user_age_bucket 125,
user_power_level 126 (codes in order of appearance, vocabularies the data's); item_id 205,
item_category 206, item_shop 207, item_brand 216; position 301; labels click and buy
(conversion; a buy without a click is kept as an unclicked impression and counted). The
combination fields carry real-valued weights (2.30259, 1.09861, ...), not counts: the sum of
each field's values is a numeric privileged_cross feature of its own, with buckets for such
weights: cross_category_weight (508, user category x item category), cross_shop_weight (509),
cross_brand_weight (702) and cross_intention_weight (853). A request is one common-feature
record (md5) of one split. Ali-CCP has no timestamps: the train split is day 1, the test split
day 2, and every impression of a day sits at the day's first second, so point-in-time
features never see the same day.
"""

import os
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np
import pandas as pd

from data.ingest import declaration
from data.ingest import report as R
from data.ingest import spool as SP
from data.ingest import world_builder as W
from data.ingest.feature_lists import FeatureLists
from data.world import schema as S

SPLITS = (("train", 1), ("test", 2))
SKELETON_COLUMNS = ["sample_id", "click", "buy", "md5", "feature_num", "feature_list"]
COMMON_COLUMNS = ["md5", "feature_num", "feature_list"]
USER_FIELDS = {"101": S.USER_ID, "124": "user_gender", "125": "user_age_bucket",
               "126": "user_power_level"}
ITEM_FIELDS = {"205": S.ITEM_ID, "206": "item_category", "207": "item_shop",
               "216": "item_brand", "301": S.POSITION}
CROSS_FIELDS = {"508": "cross_category_weight", "509": "cross_shop_weight",
                "702": "cross_brand_weight", "853": "cross_intention_weight"}
# Buckets of the combination fields' weights (log-scaled counts: 0.69, 1.10, 2.30, ...).
WEIGHT_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0,
                  8.0, 10.0, 15.0, 20.0)
FOLDERS = {"train": "sample_train", "test": "sample_test"}


def _features() -> List[declaration.FeatureSpec]:
  out = [declaration.FeatureSpec(column, S.CATEGORICAL, S.USER, S.SERVING,
                                 description=f"Ali-CCP field {field}")
         for field, column in USER_FIELDS.items() if column != S.USER_ID]
  out += [declaration.FeatureSpec(column, S.CATEGORICAL, S.ITEM, S.SERVING,
                                  description=f"Ali-CCP field {field}")
          for field, column in ITEM_FIELDS.items() if column not in (S.ITEM_ID, S.POSITION)]
  out += [declaration.FeatureSpec(column, S.NUMERIC, S.PAIR, S.PRIVILEGED_CROSS,
                                  buckets=WEIGHT_BUCKETS,
                                  description=f"sum of Ali-CCP field {field}'s weights")
          for field, column in CROSS_FIELDS.items()]
  return out


def _path(input_dir: str, kind: str, split: str) -> str:
  """A split's file, in the split's folder as distributed or directly in `input_dir`."""
  name = f"{kind}_{split}.csv"
  nested = os.path.join(input_dir, FOLDERS[split], name)
  if os.path.isfile(nested):
    return nested
  flat = os.path.join(input_dir, name)
  if os.path.isfile(flat):
    return flat
  raise R.IngestError(nested, None, f"missing file: expected Ali-CCP's {name} in "
                      f"{FOLDERS[split]}/ (as the archive unpacks) or in --input itself")


def _feature_lists(path: str, chunk: pd.DataFrame, id_fields: Iterable[str],
                   sum_fields: Iterable[str] = ()) -> FeatureLists:
  """The chunk's feature lists, checked (a malformed one or a wrong feature_num raises), with
  the first id of each of `id_fields` and the value sums of `sum_fields`."""
  return FeatureLists(path, chunk["_line"].to_numpy(), chunk["feature_list"],
                      chunk["feature_num"].to_numpy(), id_fields, sum_fields)


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
    lists = _feature_lists(path, chunk, USER_FIELDS)
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


class _FirstSighting:
  """Each item's category, shop and brand where it is first seen among the kept impressions."""

  COLUMNS = ("item_category", "item_shop", "item_brand")

  def __init__(self) -> None:
    self.seen = np.zeros(0, bool)
    self.columns = {k: np.zeros(0, np.int64) for k in self.COLUMNS}

  def add(self, rows: Dict[str, np.ndarray]) -> None:
    items = rows[S.ITEM_ID]
    size = int(items.max(initial=-1)) + 1
    if size > len(self.seen):
      grow = max(size, 2 * len(self.seen)) - len(self.seen)
      self.seen = np.concatenate([self.seen, np.zeros(grow, bool)])
      self.columns = {k: np.concatenate([v, np.zeros(grow, np.int64)])
                      for k, v in self.columns.items()}
    new = np.flatnonzero(~self.seen[items])
    codes, first = np.unique(items[new], return_index=True)
    for k in self.COLUMNS:
      self.columns[k][codes] = np.maximum(rows[k][new[first]], 0)
    self.seen[codes] = True

  def table(self) -> Dict[str, np.ndarray]:
    ids = np.flatnonzero(self.seen)
    return {S.ITEM_ID: ids, **{k: v[ids] for k, v in self.columns.items()}}


def _read_skeleton(path: str, split: str, day: int, common: pd.Index, first_request: int,
                   users: Dict[str, np.ndarray], codes: _Codes, report: R.RowReport,
                   chunk_rows: int, file_index: int, impressions: SP.ImpressionSpool,
                   items: _FirstSighting) -> None:
  """Streams the kept impressions of one split (ids, labels, position and the cross sums)
  into the spool; a request is one common-feature record, numbered from `first_request`."""
  name = f"sample_skeleton_{split}"
  for chunk in R.read_csv_chunks(path, SKELETON_COLUMNS, header=False, dtype=str,
                                 chunk_rows=chunk_rows):
    report.add_read(name, len(chunk))
    lines = chunk["_line"].to_numpy()
    lists = _feature_lists(path, chunk, ITEM_FIELDS, CROSS_FIELDS)
    out = {S.CLICK: R.check_labels(path, lines, chunk["click"].to_numpy(), "click"),
           S.CONVERSION: R.check_labels(path, lines, chunk["buy"].to_numpy(), "buy")}
    row = common.get_indexer(chunk["md5"].to_numpy(str))
    for field, column in ITEM_FIELDS.items():
      out[column] = codes.encode(field, lists)
    for field, column in CROSS_FIELDS.items():
      out[column] = lists.sums(field)
    out[S.REQUEST_ID] = row + first_request
    out[S.USER_ID] = np.where(row >= 0, users[S.USER_ID][row], -1)
    keep = row >= 0
    report.drop(name, "md5 not in common_features (or its record has no user)",
                int((~keep).sum()))
    no_item = keep & (out[S.ITEM_ID] < 0)
    report.drop(name, "no item id (field 205)", int(no_item.sum()))
    keep &= ~no_item
    report.keep(name, int(keep.sum()))
    n = int(keep.sum())
    rows = {k: v[keep] for k, v in out.items()}
    rows[S.POSITION] = np.maximum(rows[S.POSITION], 0)
    rows[S.DAY] = np.full(n, day, np.int64)
    rows[S.TIMESTAMP] = np.full(n, (day - 1) * 86_400, np.int64)
    rows[SP.FILE] = np.full(n, file_index, np.int16)
    rows[SP.LINE] = lines[keep]
    items.add(rows)
    impressions.add_rows(rows)


def _users(users_by_split: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
  """Users: the profile of their first common record."""
  users = {k: np.concatenate([u[k] for u in users_by_split]) for k in USER_FIELDS.values()}
  _, first = np.unique(users[S.USER_ID], return_index=True)
  return {k: np.maximum(v[first], 0) for k, v in users.items()}


def read_aliccp(input_dir: str, spool_dir: str, chunk_rows: int = R.CHUNK_ROWS,
                **_: Any) -> Tuple[W.LogTables, R.RowReport]:
  """Reads both splits of Ali-CCP into canonical tables, the impressions into a spool."""
  report = R.RowReport()
  codes = _Codes(list(USER_FIELDS) + list(ITEM_FIELDS))
  paths = {(kind, split): _path(input_dir, kind, split)
           for kind in ("common_features", "sample_skeleton") for split, _ in SPLITS}
  impressions = SP.ImpressionSpool(os.path.join(spool_dir, "impressions"), SP.GIVEN_DAYS)
  items = _FirstSighting()
  inputs, users_by_split, offset = [], [], 0
  for file_index, (split, day) in enumerate(SPLITS):
    common, users = _read_common(paths["common_features", split], split, codes, report,
                                 chunk_rows)
    path = paths["sample_skeleton", split]
    inputs.append(W.InputFile(path, f"sample_skeleton_{split}"))
    _read_skeleton(path, split, day, common, offset, users, codes, report, chunk_rows,
                   file_index, impressions, items)
    offset += len(common)
    users_by_split.append(users)
  facts = {"source": "aliccp", "days": {"1": "train split", "2": "test split"},
           "approximations": ["no timestamps: each split is one day, every impression at the "
                              "day's first second",
                              "combination fields 508/509/702/853: the sum of each field's "
                              "weights is a numeric privileged_cross feature",
                              "a buy without a click: kept as an unclicked impression, counted",
                              "no price: item_price is 0", "no post-click signals"]}
  return W.LogTables(impressions, _users(users_by_split), items.table(), inputs, dedupe=True,
                     facts=facts, features=_features()), report
