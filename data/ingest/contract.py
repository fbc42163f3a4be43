"""`--source=contract`: a directory of delimited files described by a user-written schema file.

The schema file (`schema.json` in the input directory, docs/real_logs.md) names the files
(impressions, and optionally users, items and a behaviour log) and declares every column:
its role (an id, the timestamp, a label, or a feature), and for a feature the project schema
slot it fills, its kind (categorical or numeric), its availability and, for a categorical
one, an optional vocabulary. The declaration must agree with the slot: a column declared
`serving` cannot fill a privileged slot, nor the reverse, so what a serving model may read
is decided by the one project schema (data/schema.py), as for the simulator.
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

SCHEMA_FILE = "schema.json"
TABLES = ("impressions", "users", "items", "behaviour")
ID_ROLES = (S.REQUEST_ID, S.USER_ID, S.ITEM_ID)
IMPRESSION_ROLES = ID_ROLES + (S.TIMESTAMP, S.DAY, S.POSITION) + S.LABELS
REQUIRED = {"impressions": (S.REQUEST_ID, S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.CLICK),
            "users": (S.USER_ID,), "items": (S.ITEM_ID,),
            "behaviour": (S.USER_ID, S.ITEM_ID, S.TIMESTAMP)}
SLOTS = {"impressions": W.IMPRESSION_SLOTS, "users": W.USER_SLOTS, "items": W.ITEM_SLOTS,
         "behaviour": ()}
_PROJECT = S.build_schema(WorldConfig())


def load_contract(input_dir: str) -> dict:
  """The parsed and checked schema file; errors name the entry at fault."""
  path = R.require_file(input_dir, SCHEMA_FILE, "the schema file of docs/real_logs.md")
  contract = R.read_json_file(path)
  if "impressions" not in contract or "columns" not in contract:
    raise R.IngestError(path, None, "expected keys 'impressions' and 'columns'")
  roles: Dict[str, List[str]] = {t: [] for t in TABLES}
  for i, column in enumerate(contract["columns"]):
    _check_column(path, i, column, contract)
    roles[column["file"]].append(column["role"])
  for table in TABLES:
    if table in contract:
      missing = [r for r in REQUIRED[table] if r not in roles[table]]
      if missing:
        raise R.IngestError(path, None, f"{table}: no column declared with role {missing}")
  return contract


def _check_column(path: str, i: int, column: dict, contract: dict) -> None:
  where = f"columns[{i}] ({column.get('column')!r})"
  for key in ("file", "column", "role"):
    if key not in column:
      raise R.IngestError(path, None, f"{where}: expected key {key!r}")
  table = column["file"]
  if table not in TABLES or table not in contract:
    raise R.IngestError(path, None, f"{where}: file {table!r} is not one of the declared "
                        f"files {[t for t in TABLES if t in contract]}")
  role = column["role"]
  if role == "feature":
    slot = column.get("slot")
    if slot not in SLOTS[table]:
      raise R.IngestError(path, None, f"{where}: slot {slot!r} is not a feature slot of "
                          f"{table}; expected one of {list(SLOTS[table])}")
    declared = _PROJECT[slot]
    if column.get("availability") != declared.availability:
      raise R.IngestError(path, None, f"{where}: availability {column.get('availability')!r} "
                          f"does not match slot {slot} ({declared.availability})")
    if column.get("kind", declared.kind) != declared.kind:
      raise R.IngestError(path, None, f"{where}: kind {column.get('kind')!r} does not match "
                          f"slot {slot} ({declared.kind})")
  elif role not in (IMPRESSION_ROLES if table == "impressions" else REQUIRED[table]):
    raise R.IngestError(path, None, f"{where}: role {role!r} is not allowed in {table}")


def _columns_of(contract: dict, table: str) -> List[dict]:
  return [c for c in contract["columns"] if c["file"] == table]


class _Categories:
  """Codes of one categorical slot, by its declared `vocabulary`: a list of raw values (a
  value not in it -> the out-of-vocabulary id, the list's length), "integer" (the values are
  the ids already; the default) or "dense" (ids 0, 1, ... in order of first appearance)."""

  def __init__(self, path: str, column: dict):
    self.path, self.name = path, column["column"]
    self.vocabulary = column.get("vocabulary", "integer")
    self.codes = R.Codes()
    if isinstance(self.vocabulary, list):
      self.codes.encode([str(v) for v in self.vocabulary])
    elif self.vocabulary not in ("integer", "dense"):
      raise R.IngestError(path, None, f"{self.name}: vocabulary must be a list, \"integer\" "
                          f"or \"dense\", got {self.vocabulary!r}")

  def encode(self, lines: np.ndarray, values) -> np.ndarray:
    if self.vocabulary == "dense":
      return self.codes.encode(values)
    if self.vocabulary == "integer":
      ids = R.check_integers(self.path, lines, values, self.name)
      if (ids < 0).any():
        i = int(np.argmax(ids < 0))
        raise R.IngestError(self.path, int(lines[i]), f"{self.name}: expected an id >= 0, "
                            f"got {ids[i]}")
      return ids
    codes = self.codes.lookup(values)
    return np.where(codes < 0, len(self.vocabulary), codes)


def _chunks(input_dir: str, contract: dict, table: str, report: R.RowReport,
            ids: Dict[str, R.Codes], chunk_rows: int) -> Iterator[Dict[str, np.ndarray]]:
  """One declared file, converted a chunk at a time: its roles and slots, and `_line`."""
  spec = contract[table]
  path = R.require_file(input_dir, spec["file"], f"the {table} file named in {SCHEMA_FILE}")
  columns = _columns_of(contract, table)
  categories = {c["column"]: _Categories(path, c) for c in columns
                if c["role"] == "feature" and _PROJECT[c["slot"]].kind == S.CATEGORICAL}
  for chunk in R.read_csv_chunks(path, [c["column"] for c in columns],
                                 spec.get("separator", ","), spec.get("header", True),
                                 dtype=str, chunk_rows=chunk_rows):
    report.add_read(table, len(chunk))
    lines = chunk["_line"].to_numpy()
    out = {"_line": lines}
    for column in columns:
      out.update(_convert(path, lines, chunk[column["column"]].to_numpy(), column, ids,
                          categories))
    yield out


def _read_table(input_dir: str, contract: dict, table: str, report: R.RowReport,
                ids: Dict[str, R.Codes], chunk_rows: int) -> Dict[str, np.ndarray]:
  """A whole declared file (the users and items files: one row per entity)."""
  parts: Dict[str, list] = {}
  for out in _chunks(input_dir, contract, table, report, ids, chunk_rows):
    for name, values in out.items():
      parts.setdefault(name, []).append(values)
  return {k: np.concatenate(v) for k, v in parts.items()} if parts else {}


def _convert(path, lines, values, column, ids, categories) -> Dict[str, np.ndarray]:
  role, name = column["role"], column["column"]
  missing = pd.isna(values)
  if missing.any():
    raise R.IngestError(path, int(lines[int(np.argmax(missing))]), f"{name}: expected a value")
  if role in ID_ROLES:
    return {role: ids[role].encode(values)}
  if role in (S.CLICK, S.CONVERSION):
    return {role: R.check_labels(path, lines, values, name)}
  if role in (S.TIMESTAMP, S.DAY, S.POSITION):
    return {role: R.check_integers(path, lines, values, name)}
  if role == S.GMV or _PROJECT[column["slot"]].kind == S.NUMERIC:
    numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(numeric)
    if bad.any():
      i = int(np.argmax(bad))
      raise R.IngestError(path, int(lines[i]), f"{name}: expected a number, got {values[i]!r}")
    return {role if role == S.GMV else column["slot"]: numeric.astype(np.float32)}
  return {column["slot"]: categories[name].encode(lines, values)}


def read_contract(input_dir: str, spool_dir: str, chunk_rows: int = R.CHUNK_ROWS
                  ) -> Tuple[W.LogTables, R.RowReport]:
  """Validates and reads a contract directory into canonical tables, counting dropped rows;
  impressions and the behaviour log stream into spools under `spool_dir`."""
  contract = load_contract(input_dir)
  report = R.RowReport()
  ids = {role: R.Codes() for role in ID_ROLES}
  tables = {t: _read_table(input_dir, contract, t, report, ids, chunk_rows)
            for t in ("users", "items") if t in contract}
  users = tables.get("users", {S.USER_ID: np.zeros(0, np.int64)})
  items = tables.get("items", {S.ITEM_ID: np.zeros(0, np.int64)})
  for name, table, key in (("users", users, S.USER_ID), ("items", items, S.ITEM_ID)):
    if name in tables:
      _, first = np.unique(table[key], return_index=True)
      report.drop(name, f"duplicate {key} (first row kept)", len(table[key]) - len(first))
      tables[name] = {k: v[np.sort(first)] for k, v in table.items()}
      report.keep(name, len(first))
  users, items = tables.get("users", users), tables.get("items", items)
  n_known = {S.USER_ID: len(ids[S.USER_ID]), S.ITEM_ID: len(ids[S.ITEM_ID])}
  imp_path = os.path.join(input_dir, contract["impressions"]["file"])
  has_day = any(c["file"] == "impressions" and c["role"] == S.DAY for c in contract["columns"])
  impressions = SP.ImpressionSpool(os.path.join(spool_dir, "impressions"),
                                   SP.GIVEN_DAYS if has_day else SP.UNIX_DAYS)
  for imp in _chunks(input_dir, contract, "impressions", report, ids, chunk_rows):
    if has_day and (imp[S.DAY] < 1).any():
      i = int(np.argmax(imp[S.DAY] < 1))
      raise R.IngestError(imp_path, int(imp["_line"][i]), f"day must be 1 or more (day 1 is "
                          f"the first), got {imp[S.DAY][i]}")
    keep = np.ones(len(imp[S.REQUEST_ID]), bool)
    for name, key in (("users", S.USER_ID), ("items", S.ITEM_ID)):
      if name in tables:
        unknown = imp[key] >= n_known[key]
        report.drop("impressions", f"{key} not in the {name} file", int((unknown & keep).sum()))
        keep &= ~unknown
    report.keep("impressions", int(keep.sum()))
    rows = {k: v[keep] for k, v in imp.items() if k != "_line"}
    rows[SP.FILE] = np.zeros(int(keep.sum()), np.int16)
    rows[SP.LINE] = imp["_line"][keep]
    impressions.add_rows(rows)
  behaviour = None
  if "behaviour" in contract:
    behaviour = SP.BehaviourSpool(os.path.join(spool_dir, "behaviour"))
    for events in _chunks(input_dir, contract, "behaviour", report, ids, chunk_rows):
      known = ((events[S.ITEM_ID] < n_known[S.ITEM_ID]) if "items" in tables
               else np.ones(len(events[S.ITEM_ID]), bool))
      report.drop("behaviour", "item_id not in the items file", int((~known).sum()))
      behaviour.add_events({k: v[known] for k, v in events.items() if k != "_line"})
      report.keep("behaviour", int(known.sum()))
  facts = {"source": "contract", "contract": contract}
  return W.LogTables(impressions, users, items, [W.InputFile(imp_path, "impressions")],
                     behaviour, dedupe=True, facts=facts), report
