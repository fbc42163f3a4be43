"""Builds a world directory (today's layout, no `truth/`) from canonical impressions, day by day.

Every adapter reduces its source to the same canonical form, `LogTables`: impression rows
spilled to disk by day as they stream (data/ingest/spool.py), with dense int64 user / item
codes, a unix-second timestamp, labels and the values of the schema slots the source supplies;
the user and item profile slots in memory (one row per entity); optionally a behaviour log,
spilled by day too. This module then, one day at a time in order, holding one day's rows:

  1. gives requests their final ids, checks that no timestamp goes backwards inside a request,
     drops repeated (request, item) rows if the adapter asks (counted), and puts the day on
     the simulator's clock (day d covers [(d - 1) * 86400, d * 86400); every impression of a
     request takes the request's first timestamp);
  2. derives what the source does not give with the simulator's point-in-time code
     (data/ingest/point_in_time.py over data/features.py): the behaviour sequence, the 24h
     click counters by category, shop and brand, the 7-day views of the item; nothing counted
     happened at or after the request's time;
  3. writes logs/day=NN/ and requests/day=NN/; users.parquet, items.parquet and the manifest
     (`has_oracle: false`) complete the world, written into a temporary sibling directory
     renamed into place at the end, so a failed ingest writes nothing.
"""

import dataclasses
import functools
import os
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from data import features as F
from data import files
from data import io
from data import schema as S
from data.config import SECONDS_PER_DAY
from data.config import WorldConfig
from data.ingest import report as R
from data.ingest import spool as SP
from data.ingest.point_in_time import DayByDayFeatures

# Slots of the project schema an adapter may fill from its source, by table.
USER_SLOTS = S.USER_PROFILE
ITEM_SLOTS = S.ITEM_PROFILE
CROSS_SLOTS = ("cross_clicks_cate_24h", "cross_clicks_shop_24h", "cross_clicks_brand_24h",
               "cross_views_item_7d")
POST_CLICK_SLOTS = ("dwell_seconds", "read_comments", "chatted_with_seller", "added_to_cart",
                    "favorited")
IMPRESSION_SLOTS = CROSS_SLOTS + POST_CLICK_SLOTS
HISTORY_LEN = 50
DUPLICATE = "duplicate (request, item): first kept"


@dataclasses.dataclass(frozen=True)
class InputFile:
  """A file impressions come from: its path (errors name it) and its name in the row report."""
  path: str
  name: str


@dataclasses.dataclass
class LogTables:
  """One source in canonical form; every id is a dense int64 code.

  impressions: rows of request_id (or the pair a ranked id is the rank of), user_id, item_id,
    timestamp (unix seconds, or any clock in seconds), click, and optionally day, position,
    conversion, gmv and any IMPRESSION_SLOTS the source supplies; plus the row's input file
    (an index into `inputs`) and line.
  users / items: user_id / item_id plus any USER_SLOTS / ITEM_SLOTS (categorical codes; item_price
    float). Ids without a row get 0 in every profile slot.
  inputs: the impression files, by the rows' file index.
  behaviour: optional user_id, item_id, timestamp of a behaviour log (clicks, carts, ...);
    when given, the 24h cross counters count these events instead of the logged clicks.
  dedupe: drop a row repeating an earlier row's (request, item), counted under its file.
  facts: what the adapter wants recorded in the manifest (source, approximations).
  """
  impressions: SP.ImpressionSpool
  users: Dict[str, np.ndarray]
  items: Dict[str, np.ndarray]
  inputs: List[InputFile]
  behaviour: Optional[SP.BehaviourSpool] = None
  dedupe: bool = False
  facts: dict = dataclasses.field(default_factory=dict)


def _dense_profile(table: Dict[str, np.ndarray], key: str, n: int, slots) -> Dict[str, np.ndarray]:
  """Profile columns indexed by id 0..n-1 (missing ids get 0)."""
  out: Dict[str, np.ndarray] = {key: np.arange(n, dtype=np.int64)}
  ids = np.asarray(table[key], np.int64)
  for slot in slots:
    dtype = np.float32 if slot == "item_price" else np.int64
    column = np.zeros(n, dtype)
    if slot in table:
      column[ids] = np.asarray(table[slot], dtype)
    out[slot] = column
  return out


@dataclasses.dataclass
class _Plan:
  """What is known before the first day is built: sizes, schema, profiles, the days."""
  config: WorldConfig
  schema: S.Schema
  users: Dict[str, np.ndarray]
  items: Dict[str, np.ndarray]
  partition_of_day: Dict[int, int]


def _plan(tables: LogTables) -> _Plan:
  spool = tables.impressions
  if not spool.rows:
    raise R.IngestError(tables.inputs[0].path if tables.inputs else "input", None,
                        "no impression was kept: expected at least one")
  n_users = max(spool.max_id[S.USER_ID], int(np.max(tables.users[S.USER_ID], initial=-1))) + 1
  n_items = max(spool.max_id[S.ITEM_ID], int(np.max(tables.items[S.ITEM_ID], initial=-1))) + 1
  users = _dense_profile(tables.users, S.USER_ID, n_users, USER_SLOTS)
  items = _dense_profile(tables.items, S.ITEM_ID, n_items, ITEM_SLOTS)
  vocab = {s: int(items[s].max(initial=0)) + 1 for s in ITEM_SLOTS if s != "item_price"}
  days = spool.world_days()
  config = WorldConfig(n_users=n_users, n_items=n_items, n_categories=vocab["item_category"],
                       n_shops=vocab["item_shop"], n_brands=vocab["item_brand"],
                       n_days=max(max(days.values()), 2), page_size=1, history_len=HISTORY_LEN)
  schema = S.build_schema(config)  # exactly the code's schema: data.verify accepts it
  tables.facts["user_profile_out_of_vocabulary"] = {
      s: int((users[s] >= schema[s].vocab_size).sum()) for s in USER_SLOTS}
  return _Plan(config, schema, users, items, {day: key for key, day in days.items()})


def _day_impressions(tables: LogTables, partition: Optional[int], day: int,
                     report: R.RowReport) -> Dict[str, np.ndarray]:
  """One day's impressions: final request ids, checked, deduplicated, on the world's clock."""
  spool = tables.impressions
  imp = spool.read(partition)
  imp[S.REQUEST_ID] = spool.request_ids(imp).astype(np.int64)
  files, lines = imp.pop(SP.FILE), imp.pop(SP.LINE)
  for name in (SP.REQUEST_A, SP.REQUEST_B, S.DAY):
    imp.pop(name, None)
  R.check_monotone_in_request([f.path for f in tables.inputs], files, lines,
                              imp[S.REQUEST_ID], np.asarray(imp[S.TIMESTAMP], np.int64))
  if tables.dedupe:
    duplicate = pd.DataFrame({"r": imp[S.REQUEST_ID], "i": imp[S.ITEM_ID]}).duplicated()
    duplicate = duplicate.to_numpy()
    for index, n in enumerate(np.bincount(files[duplicate],
                                          minlength=len(tables.inputs)).tolist()):
      report.drop_kept(tables.inputs[index].name, DUPLICATE, n)
    if duplicate.any():
      for name in imp:
        imp[name] = imp[name][~duplicate]
  n = len(imp[S.REQUEST_ID])
  timestamps = np.asarray(imp[S.TIMESTAMP], np.int64)
  _, first, inverse = np.unique(imp[S.REQUEST_ID], return_index=True, return_inverse=True)
  second = timestamps[first][inverse.reshape(-1)] % SECONDS_PER_DAY
  imp[S.DAY] = np.full(n, day, np.int64)
  imp[S.TIMESTAMP] = (day - 1) * SECONDS_PER_DAY + second
  imp.setdefault(S.POSITION, np.zeros(n, np.int64))
  for label in S.LABELS:
    imp[label] = np.asarray(imp.get(label, np.zeros(n)), np.float32)
  return imp


def _complete(imp: Dict[str, np.ndarray], plan: _Plan) -> None:
  """The post-click slots the source lacks (0), the profiles and the context hour."""
  n = len(imp[S.REQUEST_ID])
  for slot in POST_CLICK_SLOTS:
    kind = plan.schema[slot].kind
    imp.setdefault(slot, np.zeros(n, np.float32 if kind == S.NUMERIC else np.int64))
  for name in S.USER_PROFILE:
    imp[name] = plan.users[name][imp[S.USER_ID]]
  for name in S.ITEM_PROFILE:
    imp[name] = plan.items[name][imp[S.ITEM_ID]]
  imp["context_hour"] = F.context_hour(imp[S.TIMESTAMP])


def write_world(world_dir: str, tables: LogTables, report: R.RowReport) -> dict:
  """Builds and writes the world day by day, atomically (nothing is left on error); returns
  its manifest. `report` gets the dropped duplicates and goes into the manifest."""
  plan = _plan(tables)
  config, schema = plan.config, plan.schema
  origin = tables.impressions.origin()
  behaviour = tables.behaviour
  features = DayByDayFeatures(config, plan.items, None if behaviour is None else
                              functools.partial(behaviour.world_day, origin=origin))
  with files.atomic_directory(world_dir) as tmp:
    io.write_table(io.to_table(plan.users, io.USER_COLUMNS), os.path.join(tmp, "users.parquet"))
    io.write_table(io.to_table(plan.items, io.ITEM_COLUMNS), os.path.join(tmp, "items.parquet"))
    written = ["users.parquet", "items.parquet"]
    days = list(range(1, config.n_days + 1))
    row_counts = {}
    for day in days:
      imp = _day_impressions(tables, plan.partition_of_day.get(day), day, report)
      requests = features.day(day, imp)
      _complete(imp, plan)
      order = np.lexsort((imp[S.POSITION], imp[S.REQUEST_ID]))
      for kind, table in (("logs", _table(imp, io.log_columns(schema), schema, order)),
                          ("requests", _table(requests, io.REQUEST_COLUMNS, schema))):
        relative = os.path.join(io.day_dir(kind, day), io.part_name(0))
        io.write_table(table, os.path.join(tmp, relative))
        written.append(relative)
      row_counts[str(day)] = {"requests": int(len(requests[S.REQUEST_ID])),
                              "impressions": int(len(order)),
                              "clicks": int(imp[S.CLICK].sum()),
                              "conversions": int(imp[S.CONVERSION].sum())}
    hashes = {r: {"sha256": io.sha256_file(os.path.join(tmp, r)),
                  "bytes": os.path.getsize(os.path.join(tmp, r))} for r in written}
    tables.facts["rows"] = report.to_json()
    manifest = {"format_version": io.FORMAT_VERSION, "config": config.to_dict(),
                "seed": 0, "schema": schema.to_json(), "days": days, "row_counts": row_counts,
                "files": hashes, "world_hash": io.world_hash(config.to_dict(), hashes),
                "has_oracle": False, "ingest": files.json_safe(tables.facts)}
    files.write_json(os.path.join(tmp, io.MANIFEST), manifest, indent=1)
  return manifest


def _table(arrays: Dict[str, np.ndarray], columns, schema: S.Schema,
           order: Optional[np.ndarray] = None) -> pa.Table:
  """The arrow table of `columns` (rows in `order`), typed by the schema, built one column at
  a time so that a day's rows are copied once (into arrow), not once per step."""
  fields = []
  for name in columns:
    values = arrays[name] if order is None else arrays[name][order]
    if name in S.LABELS:
      values = values.astype(np.float32, copy=False)
    elif name in schema.names:
      values = values.astype(schema[name].dtype, copy=False)
    else:
      values = values.astype(np.int64, copy=False)
    fields.append(io.to_table({name: values}, [name]).column(0))
  return pa.table(fields, names=list(columns))
