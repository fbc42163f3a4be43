"""`--source=recbole`: RecBole atomic files (`.inter`, `.user`, `.item`).

Many public datasets are distributed already converted to this format: tab-separated, a
header of `name:type` fields (type token, token_seq, float or float_seq). The input directory
holds `<dataset>.inter` (and optionally `.user`, `.item`) and `recbole.json`, which maps fields
to roles and declares the features (the ML-100K mapping: examples/ml-100k/recbole.json):

  {"dataset": "ml-100k", "timezone": "America/Chicago",
   "user": "user_id", "item": "item_id", "timestamp": "timestamp",
   "click": {"field": "rating", "threshold": 4},        # click = rating >= 4
   "conversion": {"field": "rating", "threshold": 5},   # optional
   "features": {"age": {"name": "user_age_bucket", "buckets": [18, 25, 35, 45, 50, 56]},
                "occupation": {"name": "user_occupation", "vocabulary": "dense"},
                "class": {"name": "item_category", "vocabulary": "dense"}}}

A feature declaration is data/ingest/declaration.py's (a field of the .user file declares a
user feature, of the .item file an item feature, of the .inter file an impression feature);
`"slots": {field: slot}` is the short form for a project slot with dense codes. A label
without a threshold must already be 0 or 1. A request is one (user, timestamp); a token_seq
field gives its first token.
"""

import os
from typing import Any, Dict, Iterator, List, Tuple, Union, cast

import numpy as np
import pandas as pd

from data.ingest import clock as clock_lib
from data.ingest import declaration
from data.ingest import report as R
from data.ingest import spool as SP
from data.ingest import world_builder as W
from data.world import schema as S

CONFIG_FILE = "recbole.json"
TYPES = ("token", "token_seq", "float", "float_seq")
TABLE_OF_KIND = {"user": "users", "item": "items", "inter": "impressions"}


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


def _load_config(input_dir: str) -> Dict[str, Any]:
  path = R.require_file(input_dir, CONFIG_FILE, "the field mapping of docs/real_logs.md")
  config = R.read_json_file(path)
  if not isinstance(config, dict):
    raise R.IngestError(path, None, "expected a JSON object")
  for key in ("dataset", "timezone", "click"):
    if key not in config:
      hint = (": the zone the timestamps' days are cut in, e.g. \"UTC\"" if key == "timezone"
              else "")
      raise R.IngestError(path, None, f"expected key {key!r}{hint}")
  try:
    clock_lib.Clock(str(config["timezone"]))
  except ValueError as error:
    raise R.IngestError(path, None, str(error)) from None
  for key in ("slots", "features"):
    if not isinstance(config.get(key, {}), dict):
      raise R.IngestError(path, None, f"{key}: expected an object of field -> declaration")
  return config


def _declarations(config_path: str, config: Dict[str, Any], kind: str,
                  header: Dict[str, str]) -> Dict[str, declaration.FeatureSpec]:
  """{field: spec} of the fields of one file that the mapping declares as features."""
  out = {}
  entries = {f: {"name": slot, **({} if _numeric_slot(slot) else {"vocabulary": "dense"})}
             for f, slot in config.get("slots", {}).items()}
  entries.update(config.get("features", {}))
  for field, entry in entries.items():
    if field not in header:
      continue
    if not isinstance(entry, dict):
      raise R.IngestError(config_path, None, f"features.{field}: expected a declaration object")
    out[field] = declaration.parse(config_path, f"{field} ({kind})", entry,
                                   TABLE_OF_KIND[kind])
  return out


def _numeric_slot(name: str) -> bool:
  project = declaration.project_feature(name)
  return project is not None and project.kind == S.NUMERIC


def _label(path: str, chunk: pd.DataFrame, header: Dict[str, str],
           spec: Union[str, Dict[str, Any]], name: str) -> np.ndarray:
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
  return cast(np.ndarray, (numeric >= float(spec["threshold"])).astype(np.int64))


def _first_tokens(chunk: pd.DataFrame, full: str) -> np.ndarray:
  """A field's values; a token_seq's first token."""
  return cast(np.ndarray,
              chunk[full].fillna("").astype(str).str.split(" ").str[0].to_numpy(object))


def _chunks(path: str, kind: str, config: Dict[str, Any], report: R.RowReport,
            ids: Dict[str, R.Codes], encoders: Dict[str, declaration.Encoder],
            chunk_rows: int) -> Iterator[Dict[str, np.ndarray]]:
  """One atomic file, converted a chunk at a time: ids, timestamp, features, labels, `_line`."""
  header = _header(path)
  config_path = os.path.join(os.path.dirname(path), CONFIG_FILE)
  roles = {"user": S.USER_ID, "item": S.ITEM_ID, "timestamp": S.TIMESTAMP}
  wanted = {roles[r]: config.get(r, f"{r}_id" if r != "timestamp" else r) for r in roles}
  if kind == "user":
    wanted = {S.USER_ID: wanted[S.USER_ID]}
  elif kind == "item":
    wanted = {S.ITEM_ID: wanted[S.ITEM_ID]}
  specs = _declarations(config_path, config, kind, header)
  for field, spec in specs.items():
    encoders.setdefault(spec.name, declaration.Encoder(spec, path))
  missing = [f for f in wanted.values() if f not in header]
  if missing:
    raise R.IngestError(path, 1, f"expected fields {missing} in the header")
  columns: List[str] = [header[f] for f in list(wanted.values()) + list(specs)]
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
    for field, spec in specs.items():
      out[spec.name] = encoders[spec.name].encode(lines, _first_tokens(chunk, header[field]),
                                                  field)
    if kind == "inter":
      for name, spec in labels.items():
        if spec is not None:
          out[name] = _label(path, chunk, header, spec, name)
    report.keep(kind, len(chunk))
    yield out


def read_recbole(input_dir: str, spool_dir: str, chunk_rows: int = R.CHUNK_ROWS,
                 **_: Any) -> Tuple[W.LogTables, R.RowReport]:
  config = _load_config(input_dir)
  report = R.RowReport()
  ids = {S.USER_ID: R.Codes(), S.ITEM_ID: R.Codes()}
  encoders: Dict[str, declaration.Encoder] = {}
  tables: Dict[str, Dict[str, np.ndarray]] = {}
  for kind in ("user", "item"):
    path = os.path.join(input_dir, f"{config['dataset']}.{kind}")
    if os.path.isfile(path):
      parts: Dict[str, List[np.ndarray]] = {}
      for out in _chunks(path, kind, config, report, ids, encoders, chunk_rows):
        for k, v in out.items():
          parts.setdefault(k, []).append(v)
      tables[kind] = {k: np.concatenate(v) for k, v in parts.items() if k != "_line"}
  path = R.require_file(input_dir, f"{config['dataset']}.inter", "the RecBole .inter file")
  clock = clock_lib.Clock(str(config["timezone"]))
  impressions = SP.ImpressionSpool(os.path.join(spool_dir, "impressions"), SP.UNIX_DAYS, clock)
  for rows in _chunks(path, "inter", config, report, ids, encoders, chunk_rows):
    rows[SP.LINE] = rows.pop("_line")
    rows[SP.FILE] = np.zeros(len(rows[SP.LINE]), np.int16)
    rows[SP.REQUEST_A], rows[SP.REQUEST_B] = rows[S.USER_ID], rows[S.TIMESTAMP]
    impressions.add_rows(rows)
  users = tables.get("user", {S.USER_ID: np.zeros(0, np.int64)})
  items = tables.get("item", {S.ITEM_ID: np.zeros(0, np.int64)})
  facts = {"source": "recbole", "config": config, "approximations": [
      "a request is one (user, timestamp)", "labels from the configured fields/thresholds"],
           **declaration.encoder_facts(encoders)}
  return W.LogTables(impressions, users, items, [W.InputFile(path, "inter")], facts=facts,
                     features=[e.spec for e in encoders.values()]), report
