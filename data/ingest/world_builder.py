"""Builds a world directory (today's layout, no `truth/`) from canonical impression tables.

Every adapter reduces its source to the same canonical form, `LogTables`: one row per kept
impression with raw user / item / request keys (already dense int64 codes), a unix-second
timestamp, labels, and the values of the schema slots the source supplies; plus the user and
item profile slots. This module then:

  1. maps days onto 1..n_days and timestamps onto seconds since the start of day 1, the
     simulator's clock (day d covers [(d - 1) * 86400, d * 86400));
  2. derives what the source does not give with the simulator's point-in-time code
     (data/features.py): the behaviour sequence, the 24h click counters by category, shop
     and brand, and the 7-day views of the item; nothing counted happened at or after the
     request's time;
  3. writes users.parquet, items.parquet, logs/day=NN/, requests/day=NN/ and the manifest
     (`has_oracle: false`) into a temporary sibling directory renamed into place at the end,
     so a failed ingest writes nothing.
"""

import dataclasses
import os
from typing import Dict, Optional

import numpy as np

from data import features as F
from data import files
from data import io
from data import schema as S
from data.config import SECONDS_PER_DAY
from data.config import WorldConfig

# Slots of the project schema an adapter may fill from its source, by table.
USER_SLOTS = S.USER_PROFILE
ITEM_SLOTS = S.ITEM_PROFILE
CROSS_SLOTS = ("cross_clicks_cate_24h", "cross_clicks_shop_24h", "cross_clicks_brand_24h",
               "cross_views_item_7d")
POST_CLICK_SLOTS = ("dwell_seconds", "read_comments", "chatted_with_seller", "added_to_cart",
                    "favorited")
IMPRESSION_SLOTS = CROSS_SLOTS + POST_CLICK_SLOTS
HISTORY_LEN = 50


@dataclasses.dataclass
class LogTables:
  """One source in canonical form; every id is a dense int64 code.

  impressions: request_id, user_id, item_id, timestamp (unix seconds, or any monotone clock in
    seconds), click, and optionally day (1-based, overrides the timestamp's day), position,
    conversion, gmv and any IMPRESSION_SLOTS the source supplies.
  users / items: user_id / item_id plus any USER_SLOTS / ITEM_SLOTS (categorical codes; item_price
    float). Ids without a row get 0 in every profile slot.
  behaviour: optional user_id, item_id, timestamp of a behaviour log (clicks, carts, ...);
    when given, the 24h cross counters count these events instead of the logged clicks.
  facts: what the adapter wants recorded in the manifest (source, approximations, report).
  """
  impressions: Dict[str, np.ndarray]
  users: Dict[str, np.ndarray]
  items: Dict[str, np.ndarray]
  behaviour: Optional[Dict[str, np.ndarray]] = None
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


def _clock(imp: Dict[str, np.ndarray]) -> int:
  """Puts day 1..n and the simulator's clock on `imp`; returns the origin (unix seconds of
  the start of day 1). Every impression of a request gets the request's first timestamp (a
  request is one ranking, at one time)."""
  ts = np.asarray(imp[S.TIMESTAMP], np.int64)
  _, first, inverse = np.unique(imp[S.REQUEST_ID], return_index=True, return_inverse=True)
  ts = ts[first][inverse.reshape(-1)]
  if S.DAY in imp:
    day = np.asarray(imp[S.DAY], np.int64)[first][inverse.reshape(-1)]
    origin = 0
    second = np.clip(ts % SECONDS_PER_DAY, 0, SECONDS_PER_DAY - 1)
  else:
    origin = int((ts.min() // SECONDS_PER_DAY) * SECONDS_PER_DAY)
    day = (ts - origin) // SECONDS_PER_DAY + 1
    second = (ts - origin) % SECONDS_PER_DAY
  imp[S.DAY] = day
  imp[S.TIMESTAMP] = (day - 1) * SECONDS_PER_DAY + second
  return origin


def _rebased_behaviour(behaviour, origin: int, n_days: int):
  """The behaviour log on the world's clock; events outside the world's days are left out
  (none of them could precede an impression inside the window)."""
  if behaviour is None:
    return None
  ts = np.asarray(behaviour[S.TIMESTAMP], np.int64) - origin
  inside = (ts >= 0) & (ts < n_days * SECONDS_PER_DAY)
  out = {k: np.asarray(v)[inside] for k, v in behaviour.items()}
  out[S.TIMESTAMP] = ts[inside]
  return out


def build_world_arrays(tables: LogTables):
  """(config, schema, impressions, requests, users, items) ready to write."""
  imp = {k: np.asarray(v) for k, v in tables.impressions.items()}
  origin = _clock(imp)
  n = len(imp[S.REQUEST_ID])
  n_users = int(max(imp[S.USER_ID].max(initial=-1), np.max(tables.users[S.USER_ID],
                                                          initial=-1))) + 1
  n_items = int(max(imp[S.ITEM_ID].max(initial=-1), np.max(tables.items[S.ITEM_ID],
                                                          initial=-1))) + 1
  users = _dense_profile(tables.users, S.USER_ID, n_users, USER_SLOTS)
  items = _dense_profile(tables.items, S.ITEM_ID, n_items, ITEM_SLOTS)
  vocab = {s: int(items[s].max(initial=0)) + 1 for s in ITEM_SLOTS if s != "item_price"}
  n_days = int(imp[S.DAY].max())
  config = WorldConfig(n_users=n_users, n_items=n_items, n_categories=vocab["item_category"],
                       n_shops=vocab["item_shop"], n_brands=vocab["item_brand"],
                       n_days=max(n_days, 2), page_size=1, history_len=HISTORY_LEN)
  schema = S.build_schema(config)  # exactly the code's schema: data.verify accepts it
  tables.facts["user_profile_out_of_vocabulary"] = {
      s: int((users[s] >= schema[s].vocab_size).sum()) for s in USER_SLOTS}
  imp.setdefault(S.POSITION, np.zeros(n, np.int64))
  for label in S.LABELS:
    imp[label] = np.asarray(imp.get(label, np.zeros(n)), np.float32)
  requests = _requests(config, imp, items)
  behaviour = _rebased_behaviour(tables.behaviour, origin, config.n_days)
  _derive_cross(config, imp, items, behaviour)
  for slot in POST_CLICK_SLOTS:
    imp.setdefault(slot, np.zeros(n, np.float32 if schema[slot].kind == S.NUMERIC else np.int64))
  for name in S.USER_PROFILE:
    imp[name] = users[name][imp[S.USER_ID]]
  for name in S.ITEM_PROFILE:
    imp[name] = items[name][imp[S.ITEM_ID]]
  imp["context_hour"] = F.context_hour(imp[S.TIMESTAMP])
  return config, schema, imp, requests, users, items


def _requests(config, imp, items) -> Dict[str, np.ndarray]:
  """One row per request with the behaviour sequence of clicks strictly before it."""
  request_ids, first = np.unique(imp[S.REQUEST_ID], return_index=True)
  out = {S.REQUEST_ID: request_ids.astype(np.int64),
         S.USER_ID: imp[S.USER_ID][first].astype(np.int64),
         S.DAY: imp[S.DAY][first], S.TIMESTAMP: imp[S.TIMESTAMP][first]}
  clicked = imp[S.CLICK] > 0
  clicked_items = imp[S.ITEM_ID][clicked]
  sequence = F.ClickSequence(imp[S.USER_ID][clicked], imp[S.TIMESTAMP][clicked],
                             imp[S.POSITION][clicked], clicked_items,
                             items["item_category"][clicked_items],
                             items["item_shop"][clicked_items], F.time_span(config))
  out.update(sequence.last_before(out[S.USER_ID], out[S.TIMESTAMP], config.history_len))
  out["context_hour"] = F.context_hour(out[S.TIMESTAMP])
  return out


def _derive_cross(config, imp, items, behaviour) -> None:
  """Fills the cross slots the source did not supply, point in time (strictly before t)."""
  span = F.time_span(config)
  if behaviour is not None:
    events = {k: np.asarray(behaviour[k], np.int64) for k in (S.USER_ID, S.ITEM_ID, S.TIMESTAMP)}
  else:
    clicked = imp[S.CLICK] > 0
    events = {k: imp[k][clicked] for k in (S.USER_ID, S.ITEM_ID, S.TIMESTAMP)}
  item = events[S.ITEM_ID]
  counters = F.ClickCounters(config, events[S.USER_ID], events[S.TIMESTAMP],
                             items["item_category"][item], items["item_shop"][item],
                             items["item_brand"][item], span)
  shown = imp[S.ITEM_ID]
  counts = counters.count(imp[S.USER_ID], imp[S.TIMESTAMP], items["item_category"][shown],
                          items["item_shop"][shown], items["item_brand"][shown])
  for name, values in counts.items():
    imp.setdefault(name, values)
  if "cross_views_item_7d" not in imp:
    views = F.view_counter(config, imp[S.USER_ID], shown, imp[S.TIMESTAMP], span)
    imp["cross_views_item_7d"] = views.count(
        imp[S.USER_ID] * config.n_items + shown, imp[S.TIMESTAMP], F.WINDOW_7D).astype(np.float32)


def write_world(world_dir: str, tables: LogTables) -> dict:
  """Writes the world atomically (nothing is left on error); returns its manifest."""
  config, schema, imp, requests, users, items = build_world_arrays(tables)
  with files.atomic_directory(world_dir) as tmp:
    io.write_table(io.to_table(users, io.USER_COLUMNS), os.path.join(tmp, "users.parquet"))
    io.write_table(io.to_table(items, io.ITEM_COLUMNS), os.path.join(tmp, "items.parquet"))
    written = ["users.parquet", "items.parquet"]
    days = list(range(1, config.n_days + 1))
    row_counts = {}
    for day in days:
      rows = np.flatnonzero(imp[S.DAY] == day)
      rows = rows[np.lexsort((imp[S.POSITION][rows], imp[S.REQUEST_ID][rows]))]
      req_rows = np.flatnonzero(requests[S.DAY] == day)
      for kind, arrays, columns in (
          ("logs", {k: v[rows] for k, v in imp.items()}, io.log_columns(schema)),
          ("requests", {k: v[req_rows] for k, v in requests.items()}, io.REQUEST_COLUMNS)):
        relative = os.path.join(io.day_dir(kind, day), io.part_name(0))
        io.write_table(io.to_table(_typed(arrays, schema), columns), os.path.join(tmp, relative))
        written.append(relative)
      row_counts[str(day)] = {"requests": int(len(req_rows)), "impressions": int(len(rows)),
                              "clicks": int(imp[S.CLICK][rows].sum()),
                              "conversions": int(imp[S.CONVERSION][rows].sum())}
    hashes = {r: {"sha256": io.sha256_file(os.path.join(tmp, r)),
                  "bytes": os.path.getsize(os.path.join(tmp, r))} for r in written}
    manifest = {"format_version": io.FORMAT_VERSION, "config": config.to_dict(),
                "seed": 0, "schema": schema.to_json(), "days": days, "row_counts": row_counts,
                "files": hashes, "world_hash": io.world_hash(config.to_dict(), hashes),
                "has_oracle": False, "ingest": files.json_safe(tables.facts)}
    files.write_json(os.path.join(tmp, io.MANIFEST), manifest, indent=1)
  return manifest


def _typed(arrays: Dict[str, np.ndarray], schema: S.Schema) -> Dict[str, np.ndarray]:
  out = {}
  for name, values in arrays.items():
    if name in S.LABELS:
      out[name] = values.astype(np.float32)
    elif name in schema.names:
      out[name] = values.astype(schema[name].dtype)
    else:
      out[name] = values.astype(np.int64)
  return out
