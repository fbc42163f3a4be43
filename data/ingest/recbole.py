"""`--source=recbole`: RecBole atomic files (`.inter`, `.user`, `.item`).

Many public datasets are distributed already converted to this format: tab-separated, a
header of `name:type` fields (type token, token_seq, float or float_seq). The input directory
holds `<dataset>.inter` (and optionally `.user`, `.item`) and `recbole.json`, which maps fields
to roles:

  {"dataset": "ml-100k",
   "user": "user_id", "item": "item_id", "timestamp": "timestamp",
   "click": {"field": "rating", "threshold": 4},        # click = rating >= 4
   "conversion": {"field": "rating", "threshold": 5},   # optional
   "slots": {"age": "user_age_bucket", "gender": "user_gender",
             "occupation": "user_power_level", "class": "item_category"}}

A label without a threshold must already be 0 or 1. A slot's availability is the project
schema's (docs/real_logs.md); a field mapped to a privileged slot reaches teachers only. A
request is one (user, timestamp); a token_seq field gives its first token.
"""

import os
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pandas as pd

from data import schema as S
from data.config import WorldConfig
from data.ingest import report as R
from data.ingest import spool as SP
from data.ingest import world_builder as W

CONFIG_FILE = "recbole.json"
TYPES = ("token", "token_seq", "float", "float_seq")
SLOTS = {"inter": W.IMPRESSION_SLOTS, "user": W.USER_SLOTS, "item": W.ITEM_SLOTS}
_PROJECT = S.build_schema(WorldConfig())


def _header(path: str) -> Dict[str, str]:
  """{field name: full header name} of an atomic file; raises on another format."""
  with open(path, encoding="utf-8", errors="replace") as f:
    first = f.readline().rstrip("\r\n").split("\t")
  out = {}
  for column in first:
    name, _, kind = column.partition(":")
    if kind not in TYPES:
      raise R.IngestError(path, 1, "expected a RecBole atomic header of tab-separated "
                          f"name:type fields (type in {list(TYPES)}), got {column!r}")
    out[name] = column
  return out


def _load_config(input_dir: str) -> dict:
  path = R.require_file(input_dir, CONFIG_FILE, "the field mapping of data/ingest/recbole.py")
  config = R.read_json_file(path)
  for key in ("dataset", "click"):
    if key not in config:
      raise R.IngestError(path, None, f"expected key {key!r}")
  return config


def _label(path, chunk, header, spec, name) -> np.ndarray:
  spec = spec if isinstance(spec, dict) else {"field": spec}
  values = chunk[header[spec["field"]]].to_numpy()
  lines = chunk["_line"].to_numpy()
  if "threshold" not in spec:
    return R.check_labels(path, lines, values, name)
  numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
  bad = ~np.isfinite(numeric)
  if bad.any():
    i = int(np.argmax(bad))
    raise R.IngestError(path, int(lines[i]), f"{spec['field']}: expected a number")
  return (numeric >= float(spec["threshold"])).astype(np.int64)


def _slot_values(path, chunk, full, slot, codes) -> np.ndarray:
  values = chunk[full].fillna("").astype(str).str.split(" ").str[0]
  if _PROJECT[slot].kind == S.NUMERIC:
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    return np.nan_to_num(numeric).astype(np.float32)
  return codes.setdefault(slot, R.Codes()).encode(values.to_numpy())


def _chunks(path, kind, config, report, ids, codes,
            chunk_rows) -> Iterator[Dict[str, np.ndarray]]:
  """One atomic file, converted a chunk at a time: ids, timestamp, slots, labels, `_line`."""
  header = _header(path)
  roles = {"user": S.USER_ID, "item": S.ITEM_ID, "timestamp": S.TIMESTAMP}
  wanted = {roles[r]: config.get(r, f"{r}_id" if r != "timestamp" else r) for r in roles}
  if kind == "user":
    wanted = {S.USER_ID: wanted[S.USER_ID]}
  elif kind == "item":
    wanted = {S.ITEM_ID: wanted[S.ITEM_ID]}
  slots = {f: s for f, s in config.get("slots", {}).items() if f in header}
  for field, slot in slots.items():
    if slot not in SLOTS[kind]:
      raise R.IngestError(os.path.join(os.path.dirname(path), CONFIG_FILE), None,
                          f"slots: {field} -> {slot!r} is not a slot of .{kind} files; "
                          f"expected one of {list(SLOTS[kind])}")
  missing = [f for f in wanted.values() if f not in header]
  if missing:
    raise R.IngestError(path, 1, f"expected fields {missing} in the header")
  columns: List[str] = [header[f] for f in list(wanted.values()) + list(slots)]
  labels = {S.CLICK: config["click"], S.CONVERSION: config.get("conversion")}
  columns += [header[(s if isinstance(s, dict) else {"field": s})["field"]]
              for s in labels.values() if s is not None and kind == "inter"]
  for chunk in R.read_csv_chunks(path, list(dict.fromkeys(columns)), "\t", dtype=str,
                                 chunk_rows=chunk_rows):
    report.add_read(kind, len(chunk))
    lines = chunk["_line"].to_numpy()
    out = {"_line": lines}
    for role, field in wanted.items():
      values = chunk[header[field]].to_numpy()
      out[role] = (ids[role].encode(values) if role != S.TIMESTAMP else
                   R.check_integers(path, lines, pd.to_numeric(pd.Series(values),
                                                                errors="coerce").round(), field))
    for field, slot in slots.items():
      out[slot] = _slot_values(path, chunk, header[field], slot, codes)
    if kind == "inter":
      for name, spec in labels.items():
        if spec is not None:
          out[name] = _label(path, chunk, header, spec, name)
    report.keep(kind, len(chunk))
    yield out


def read_recbole(input_dir: str, spool_dir: str, chunk_rows: int = R.CHUNK_ROWS
                 ) -> Tuple[W.LogTables, R.RowReport]:
  config = _load_config(input_dir)
  report = R.RowReport()
  ids = {S.USER_ID: R.Codes(), S.ITEM_ID: R.Codes()}
  codes: Dict[str, R.Codes] = {}
  tables: Dict[str, Dict[str, np.ndarray]] = {}
  for kind in ("user", "item"):
    path = os.path.join(input_dir, f"{config['dataset']}.{kind}")
    if os.path.isfile(path):
      parts: Dict[str, list] = {}
      for out in _chunks(path, kind, config, report, ids, codes, chunk_rows):
        for k, v in out.items():
          parts.setdefault(k, []).append(v)
      tables[kind] = {k: np.concatenate(v) for k, v in parts.items() if k != "_line"}
  path = R.require_file(input_dir, f"{config['dataset']}.inter", "the RecBole .inter file")
  impressions = SP.ImpressionSpool(os.path.join(spool_dir, "impressions"), SP.UNIX_DAYS)
  for rows in _chunks(path, "inter", config, report, ids, codes, chunk_rows):
    rows[SP.LINE] = rows.pop("_line")
    rows[SP.FILE] = np.zeros(len(rows[SP.LINE]), np.int16)
    rows[SP.REQUEST_A], rows[SP.REQUEST_B] = rows[S.USER_ID], rows[S.TIMESTAMP]
    impressions.add_rows(rows)
  users = tables.get("user", {S.USER_ID: np.zeros(0, np.int64)})
  items = tables.get("item", {S.ITEM_ID: np.zeros(0, np.int64)})
  facts = {"source": "recbole", "config": config, "approximations": [
      "a request is one (user, timestamp)", "labels from the configured fields/thresholds"]}
  return W.LogTables(impressions, users, items, [W.InputFile(path, "inter")], facts=facts), report
