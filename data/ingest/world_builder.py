"""Builds a world directory (today's layout, no `truth/`) from canonical impressions, day by day.

Every adapter reduces its source to the same canonical form, `LogTables`: impression rows
spilled to disk by day as they stream (data/ingest/spool.py), with dense int64 user / item
codes, a unix-second timestamp, labels and the values of the features the source declares
(data/ingest/declaration.py); the user and item profile features in memory (one row per
entity); optionally a behaviour log, spilled by day too. This module then:

  0. plans the world: the day span (at most --max_days, else the line that makes it longer),
     each categorical feature's vocabulary (declared, or the data's; an id beyond a declared
     vocabulary becomes the out-of-vocabulary id, counted), the config and the world's own
     schema (data/world/declared.py: the core, the declared features, the derived cross features);
  1. one day at a time in order, holding one day's rows, checks and puts the day on the
     world's clock (data/ingest/day_rows.py: repeated rows, timestamps going backwards in a
     request, values no world may hold, conversions without a click);
  2. derives what the source does not give with the simulator's point-in-time code
     (data/ingest/point_in_time.py over data/world/features.py): the behaviour sequence, the 24h
     click counters by category, shop and brand, the 7-day views of the item; nothing counted
     happened at or after the request's time;
  3. writes logs/day=NN/ and requests/day=NN/; users.parquet, items.parquet and the manifest
     (`has_oracle: false`, `schema_declared: true`, the schema hashed with the world) complete
     the world, written into a temporary sibling directory renamed into place at the end, so
     a failed ingest writes nothing.
"""

import dataclasses
import functools
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from data.ingest import clock
from data.ingest import day_rows
from data.ingest import declaration
from data.ingest import report as R
from data.ingest import spool as SP
from data.ingest.point_in_time import DayByDayFeatures
from data.plumbing import files
from data.world import declared as D
from data.world import features as F
from data.world import io
from data.world import schema as S
from data.world.config import WorldConfig

# Slots of the project schema adapters and contracts may fill, by table.
USER_SLOTS = S.USER_PROFILE
ITEM_SLOTS = S.ITEM_PROFILE
CROSS_SLOTS = ("cross_clicks_cate_24h", "cross_clicks_shop_24h", "cross_clicks_brand_24h",
               "cross_views_item_7d")
POST_CLICK_SLOTS = ("dwell_seconds", "read_comments", "chatted_with_seller", "added_to_cart",
                    "favorited")
IMPRESSION_SLOTS = CROSS_SLOTS + POST_CLICK_SLOTS
HISTORY_LEN = 50
MAX_DAYS = 1000
DUPLICATE = day_rows.DUPLICATE
KEYED = ("item_category", "item_shop", "item_brand")  # keys of the derived counters: no OOV
_PROJECT = S.build_schema(WorldConfig())


@dataclasses.dataclass(frozen=True)
class InputFile:
  """A file impressions come from: its path (errors name it) and its name in the row report."""
  path: str
  name: str


@dataclasses.dataclass
class LogTables:
  """One source in canonical form; every id is a dense int64 code.

  impressions: rows of request_id (or the pair a ranked id is the rank of), user_id, item_id,
    timestamp (unix seconds), click, and optionally day, position, conversion, gmv and the
    source's impression features; plus the row's input file (an index into `inputs`) and line.
  users / items: user_id / item_id plus the source's profile features (categorical codes,
    numeric values). Ids without a row get 0 in every profile feature.
  inputs: the impression files, by the rows' file index.
  behaviour: optional user_id, item_id, timestamp of a behaviour log (clicks, carts, ...);
    when given, the 24h cross counters count these events instead of the logged clicks.
  dedupe: drop a row repeating an earlier row's (request, item), counted under its file.
  facts: what the adapter wants recorded in the manifest (source, approximations).
  features: the declared features (None: every column named after a project slot, declared
    as the project declares it).
  eval_day_key: the local day number of the source's published test day, if it has one: the
    world's default eval day when the log has it.
  """
  impressions: SP.ImpressionSpool
  users: Dict[str, np.ndarray]
  items: Dict[str, np.ndarray]
  inputs: List[InputFile]
  behaviour: Optional[SP.BehaviourSpool] = None
  dedupe: bool = False
  facts: Dict[str, Any] = dataclasses.field(default_factory=dict)
  features: Optional[List[declaration.FeatureSpec]] = None
  eval_day_key: Optional[int] = None


def declared_specs(tables: LogTables) -> List[declaration.FeatureSpec]:
  """The tables' declared features (see LogTables.features)."""
  if tables.features is not None:
    return list(tables.features)
  specs = []
  for table, names in (("users", tables.users), ("items", tables.items),
                       ("impressions", tables.impressions.columns())):
    entity = declaration.ENTITY_OF_TABLE[table]
    for name in names:
      if name in _PROJECT.names and _PROJECT[name].entity == entity and name not in (
          S.USER_ID, S.ITEM_ID):
        f = _PROJECT[name]
        specs.append(declaration.FeatureSpec(f.name, f.kind, entity, f.availability,
                                             description=f.description))
  return specs


def _dense_profile(table: Dict[str, np.ndarray], key: str, n: int,
                   specs: List[declaration.FeatureSpec]) -> Dict[str, np.ndarray]:
  """Profile columns indexed by id 0..n-1 (missing ids get 0)."""
  out: Dict[str, np.ndarray] = {key: np.arange(n, dtype=np.int64)}
  ids = np.asarray(table[key], np.int64)
  for spec in specs:
    dtype = np.float32 if spec.kind == S.NUMERIC else np.int64
    column = np.zeros(n, dtype)
    if spec.name in table:
      column[ids] = np.asarray(table[spec.name], dtype)
    out[spec.name] = column
  return out


@dataclasses.dataclass
class _Plan:
  """What is known before the first day is built: sizes, schema, profiles, the days."""
  config: WorldConfig
  schema: S.Schema
  users: Dict[str, np.ndarray]
  items: Dict[str, np.ndarray]
  partition_of_day: Dict[int, int]
  sizes: Dict[str, int]


def check_span(tables: LogTables, max_days: int) -> None:
  """Refuses a log whose days span more than `max_days`, naming the row that stretches it."""
  spool = tables.impressions
  span = spool.span_days()
  if span <= max_days:
    return
  keys = spool.partitions()
  blame_first = len(keys) > 1 and keys[1] - keys[0] > keys[-1] - keys[-2]
  blamed, other = ((spool.extremes["first"], spool.extremes["last"]) if blame_first
                   else (spool.extremes["last"], spool.extremes["first"]))
  key, file, line, timestamp = blamed
  where = f"{tables.inputs[other[1]].path}:{other[2]}"
  raise R.IngestError(
      tables.inputs[file].path, line,
      f"timestamp {timestamp} ({clock.date_of(spool.clock.local_day(timestamp))}) makes the "
      f"log span {span:,} days (the other end: {clock.date_of(spool.clock.local_day(other[3]))}"
      f", {where}), more than --max_days={max_days}: a timestamp in another unit "
      "(milliseconds?) or a stray row? Raise --max_days if the span is real")


def _plan(tables: LogTables, max_days: int) -> _Plan:
  spool = tables.impressions
  if not spool.rows:
    raise R.IngestError(tables.inputs[0].path if tables.inputs else "input", None,
                        "no impression was kept: expected at least one")
  check_span(tables, max_days)
  specs = declared_specs(tables)
  n_users = max(spool.max_id[S.USER_ID], int(np.max(tables.users[S.USER_ID], initial=-1))) + 1
  n_items = max(spool.max_id[S.ITEM_ID], int(np.max(tables.items[S.ITEM_ID], initial=-1))) + 1
  of = {entity: [s for s in specs if s.entity == entity] for entity in (S.USER, S.ITEM, S.PAIR)}
  item_specs = of[S.ITEM] + [declaration.FeatureSpec(name, S.CATEGORICAL, S.ITEM, S.SERVING)
                             for name in ("item_category", "item_shop")
                             if name not in [s.name for s in of[S.ITEM]]]
  users = _dense_profile(tables.users, S.USER_ID, n_users, of[S.USER])
  items = _dense_profile(tables.items, S.ITEM_ID, n_items, item_specs)
  sizes, oov = {}, {}
  for spec in of[S.USER] + item_specs + of[S.PAIR]:
    if spec.kind != S.CATEGORICAL:
      continue
    column = users if spec.entity == S.USER else items
    observed = (spool.max_value.get(spec.name, 0) if spec.entity == S.PAIR
                else int(column[spec.name].max(initial=0)))
    declared_size = spec.declared_size()
    if spec.name in KEYED or declared_size is None:
      sizes[spec.name] = max(declared_size or 0, observed + 1, 1)
    else:
      sizes[spec.name] = declared_size
    if spec.entity != S.PAIR:
      over = column[spec.name] >= sizes[spec.name]
      oov[spec.name] = int(over.sum())
      column[spec.name][over] = sizes[spec.name]
  days = spool.world_days()
  config = WorldConfig(n_users=n_users, n_items=n_items, n_categories=sizes["item_category"],
                       n_shops=sizes["item_shop"], n_brands=sizes.get("item_brand", 1),
                       n_days=max(max(days.values()), 2), page_size=1, history_len=HISTORY_LEN)
  schema = D.assemble(config, [s.feature(sizes.get(s.name, 0)) for s in of[S.USER]],
                      [s.feature(sizes.get(s.name, 0)) for s in of[S.ITEM]],
                      [s.feature(sizes.get(s.name, 0)) for s in of[S.PAIR]])
  problems = D.problems(schema, config)
  if problems:
    raise R.IngestError(tables.inputs[0].path if tables.inputs else "input", None,
                        f"the declared features make no valid schema: {problems[0]}")
  tables.facts["features"] = [spec.to_json() for spec in specs]
  tables.facts["out_of_vocabulary"] = {k: v for k, v in oov.items() if v}
  tables.facts["user_profile_out_of_vocabulary"] = {
      s.name: oov.get(s.name, 0) for s in of[S.USER] if s.kind == S.CATEGORICAL}
  tables.facts.update(spool.clock.facts())
  return _Plan(config, schema, users, items, {day: key for key, day in days.items()},
               day_rows.categorical_sizes(schema, spool.columns()))


def _complete(imp: Dict[str, np.ndarray], plan: _Plan) -> None:
  """The profile features and the context hour of the day's impressions."""
  for name, column in plan.users.items():
    if name != S.USER_ID:
      imp[name] = column[imp[S.USER_ID]]
  for name, column in plan.items.items():
    if name != S.ITEM_ID:
      imp[name] = column[imp[S.ITEM_ID]]
  imp["context_hour"] = F.context_hour(imp[S.TIMESTAMP])


def default_eval_day(tables: LogTables, plan: _Plan) -> Optional[int]:
  """The world day of the source's published test day, when the log has it."""
  if tables.eval_day_key is None:
    return None
  day = int(tables.eval_day_key) - tables.impressions.first_local_day() + 1
  return day if 1 <= day <= plan.config.n_days else None


def write_world(world_dir: str, tables: LogTables, report: R.RowReport,
                max_days: int = MAX_DAYS, slice_rows: int = day_rows.SLICE_ROWS) -> Dict[str, Any]:
  """Builds and writes the world day by day (a day larger than `slice_rows` in slices, one
  part file each), atomically (nothing is left on error); returns its manifest. `report`
  gets the dropped duplicates and goes into the manifest."""
  plan = _plan(tables, max_days)
  config, schema = plan.config, plan.schema
  spool = tables.impressions
  origin = spool.origin()
  behaviour = tables.behaviour
  features = DayByDayFeatures(config, plan.items, None if behaviour is None else
                              functools.partial(behaviour.world_day, origin=origin),
                              [f.name for f in schema.features if f.name in D.DERIVED_CROSS
                               and f.name not in spool.columns()])
  rows = day_rows.DayRows(spool, [f.path for f in tables.inputs],
                          [f.name for f in tables.inputs], schema, plan.sizes, tables.dedupe,
                          report, slice_rows)
  with files.atomic_directory(world_dir) as tmp:
    io.write_table(io.to_table(plan.users, io.user_columns(schema)),
                   os.path.join(tmp, "users.parquet"))
    io.write_table(io.to_table(plan.items, io.item_columns(schema)),
                   os.path.join(tmp, "items.parquet"))
    written = ["users.parquet", "items.parquet"]
    days = list(range(1, config.n_days + 1))
    row_counts = {}
    for day in days:
      counts = {"requests": 0, "impressions": 0, "clicks": 0, "conversions": 0}
      for part, imp in enumerate(rows.slices(plan.partition_of_day.get(day), day)):
        requests = features.day(day, imp)
        _complete(imp, plan)
        order = np.lexsort((imp[S.POSITION], imp[S.REQUEST_ID]))
        for kind, table in (("logs", _table(imp, io.log_columns(schema), schema, order)),
                            ("requests", _table(requests, io.REQUEST_COLUMNS, schema))):
          relative = os.path.join(io.day_dir(kind, day), io.part_name(part))
          io.write_table(table, os.path.join(tmp, relative))
          written.append(relative)
        counts["requests"] += int(len(requests[S.REQUEST_ID]))
        counts["impressions"] += int(len(order))
        counts["clicks"] += int(imp[S.CLICK].sum())
        counts["conversions"] += int(imp[S.CONVERSION].sum())
        del imp, requests, order
      row_counts[str(day)] = counts
    hashes = {r: {"sha256": io.sha256_file(os.path.join(tmp, r)),
                  "bytes": os.path.getsize(os.path.join(tmp, r))} for r in written}
    tables.facts["rows"] = report.to_json()
    manifest = {"format_version": io.FORMAT_VERSION, "config": config.to_dict(),
                "seed": 0, "schema": schema.to_json(), D.SCHEMA_DECLARED: True, "days": days,
                "row_counts": row_counts, "files": hashes,
                "world_hash": io.world_hash(config.to_dict(), hashes, schema.to_json()),
                "has_oracle": False, "ingest": files.json_safe(tables.facts)}
    eval_day = default_eval_day(tables, plan)
    if eval_day is not None:
      manifest["default_eval_day"] = eval_day
    files.write_json(os.path.join(tmp, io.MANIFEST), manifest, indent=1)
  return manifest


def _table(arrays: Dict[str, np.ndarray], columns: Sequence[str], schema: S.Schema,
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
