"""`--source=contract`: a directory of delimited files described by a user-written schema file.

The schema file (`schema.json` in the input directory, docs/real_logs.md) names the files
(impressions, and optionally users, items and a behaviour log), the timezone the timestamps'
days are cut in, and declares every column: its role (an id, the timestamp, a label, or a
feature), and for a feature its name in the world, kind, availability and how its raw values
map to ids or numbers (data/ingest/declaration.py). A feature named after a slot of the
project schema (data/world/schema.py) keeps that slot's kind and availability, so a post-click
signal cannot be declared `serving` under a project name; any other name declares a feature
of the world's own schema (data/world/declared.py).
"""

import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from data.ingest import clock as clock_lib
from data.ingest import declaration
from data.ingest import report as R
from data.ingest import spool as SP
from data.ingest import world_builder as W
from data.world import schema as S

SCHEMA_FILE = "schema.json"
TABLES = ("impressions", "users", "items", "behaviour")
ID_ROLES = (S.REQUEST_ID, S.USER_ID, S.ITEM_ID)
IMPRESSION_ROLES = ID_ROLES + (S.TIMESTAMP, S.DAY, S.POSITION) + S.LABELS
REQUIRED = {"impressions": (S.REQUEST_ID, S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.CLICK),
            "users": (S.USER_ID,), "items": (S.ITEM_ID,),
            "behaviour": (S.USER_ID, S.ITEM_ID, S.TIMESTAMP)}
SHARED_REQUEST = "request id shared with another user: rows moved to a request of their own"


def load_contract(input_dir: str) -> Dict[str, Any]:
  """The parsed and checked schema file; errors name the entry at fault. Each feature column
  gains its parsed declaration under "_spec"."""
  path = R.require_file(input_dir, SCHEMA_FILE, "the schema file of docs/real_logs.md")
  contract = R.read_json_file(path)
  if not isinstance(contract, dict) or "impressions" not in contract or "columns" not in contract:
    raise R.IngestError(path, None, "expected keys 'impressions', 'timezone' and 'columns'")
  if "timezone" not in contract:
    raise R.IngestError(path, None, "expected key 'timezone': the zone the timestamps' days "
                        "are cut in, e.g. \"UTC\" or \"Asia/Shanghai\" (docs/real_logs.md)")
  try:
    clock_lib.Clock(str(contract["timezone"]))
  except ValueError as error:
    raise R.IngestError(path, None, str(error)) from None
  roles: Dict[str, List[str]] = {t: [] for t in TABLES}
  names: Dict[str, str] = {}
  for i, column in enumerate(contract["columns"]):
    spec = _check_column(path, i, column, contract)
    roles[column["file"]].append(column["role"])
    if spec is not None:
      if spec.name in names:
        raise R.IngestError(path, None, f"columns[{i}] ({column['column']!r}): feature "
                            f"{spec.name!r} is declared twice (also by {names[spec.name]})")
      names[spec.name] = f"columns[{i}]"
      column["_spec"] = spec
  for table in TABLES:
    if table in contract:
      missing = [r for r in REQUIRED[table] if r not in roles[table]]
      if missing:
        raise R.IngestError(path, None, f"{table}: no column declared with role {missing}")
  return contract


def _check_column(path: str, i: int, column: Dict[str, Any],
                  contract: Dict[str, Any]) -> Optional[declaration.FeatureSpec]:
  """Checks one column entry; returns its feature declaration (None for other roles)."""
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
    if table == "behaviour":
      raise R.IngestError(path, None, f"{where}: the behaviour file has no features")
    return declaration.parse(path, where, column, table)
  if role not in (IMPRESSION_ROLES if table == "impressions" else REQUIRED[table]):
    raise R.IngestError(path, None, f"{where}: role {role!r} is not allowed in {table}")
  return None


def _columns_of(contract: Dict[str, Any], table: str) -> List[Dict[str, Any]]:
  return [c for c in contract["columns"] if c["file"] == table]


def _chunks(input_dir: str, contract: Dict[str, Any], table: str, report: R.RowReport,
            ids: Dict[str, R.Codes], chunk_rows: int,
            encoders: Dict[str, declaration.Encoder]) -> Iterator[Dict[str, np.ndarray]]:
  """One declared file, converted a chunk at a time: its roles and features, and `_line`."""
  spec = contract[table]
  path = R.require_file(input_dir, spec["file"], f"the {table} file named in {SCHEMA_FILE}")
  columns = _columns_of(contract, table)
  for column in columns:
    if "_spec" in column:
      encoders[column["_spec"].name] = declaration.Encoder(column["_spec"], path)
  for chunk in R.read_csv_chunks(path, [c["column"] for c in columns],
                                 spec.get("separator", ","), spec.get("header", True),
                                 dtype=str, chunk_rows=chunk_rows):
    report.add_read(table, len(chunk))
    lines = chunk["_line"].to_numpy()
    out = {"_line": lines}
    for column in columns:
      values = chunk[column["column"]].to_numpy()
      if "_spec" in column:
        encoder = encoders[column["_spec"].name]
        out[encoder.spec.name] = encoder.encode(lines, values, column["column"])
      else:
        out.update(_convert(path, lines, values, column, ids))
        if table == "impressions" and column["role"] in (S.REQUEST_ID, S.USER_ID):
          out[f"_raw_{column['role']}"] = values  # a request's owner (_RequestOwners)
    yield out


def _read_table(input_dir: str, contract: Dict[str, Any], table: str, report: R.RowReport,
                ids: Dict[str, R.Codes], chunk_rows: int,
                encoders: Dict[str, declaration.Encoder]) -> Dict[str, np.ndarray]:
  """A whole declared file (the users and items files: one row per entity)."""
  parts: Dict[str, List[np.ndarray]] = {}
  for out in _chunks(input_dir, contract, table, report, ids, chunk_rows, encoders):
    for name, values in out.items():
      parts.setdefault(name, []).append(values)
  return {k: np.concatenate(v) for k, v in parts.items()} if parts else {}


def _convert(path: str, lines: np.ndarray, values: pd.Series, column: Dict[str, Any],
             ids: Dict[str, R.Codes]) -> Dict[str, np.ndarray]:
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
  return {S.GMV: declaration.check_numbers(path, lines, values, name).astype(np.float32)}


class _RequestOwners:
  """The first user of each raw request id: a row of another user goes to a request of its
  own, the pair (request, user), and is counted."""

  def __init__(self) -> None:
    self.pairs = R.Codes()
    self.first_user = np.zeros(0, np.int64)

  def split(self, raw_requests: npt.ArrayLike, request_codes: np.ndarray, users: np.ndarray,
            raw_users: npt.ArrayLike) -> Tuple[np.ndarray, int]:
    size = int(request_codes.max(initial=-1)) + 1
    if size > len(self.first_user):
      grown = np.full(max(size, 2 * len(self.first_user)), -1, np.int64)
      grown[:len(self.first_user)] = self.first_user
      self.first_user = grown
    unseen = np.flatnonzero(self.first_user[request_codes] < 0)
    new, first = np.unique(request_codes[unseen], return_index=True)
    self.first_user[new] = users[unseen[first]]
    other = self.first_user[request_codes] != users
    if not other.any():
      return request_codes, 0
    keys = (pd.Series(np.asarray(raw_requests, object)[other]).astype(str) + "\x1f"
            + pd.Series(np.asarray(raw_users, object)[other]).astype(str))
    codes = request_codes.copy()
    codes[other] = -1 - self.pairs.encode(keys.to_numpy())  # negative: placed after all ids
    return codes, int(other.sum())


def read_contract(input_dir: str, spool_dir: str, chunk_rows: int = R.CHUNK_ROWS,
                  **_: Any) -> Tuple[W.LogTables, R.RowReport]:
  """Validates and reads a contract directory into canonical tables, counting dropped rows;
  impressions and the behaviour log stream into spools under `spool_dir`."""
  contract = load_contract(input_dir)
  report = R.RowReport()
  ids = {role: R.Codes() for role in ID_ROLES}
  encoders: Dict[str, declaration.Encoder] = {}
  tables = {t: _read_table(input_dir, contract, t, report, ids, chunk_rows, encoders)
            for t in ("users", "items") if t in contract}
  users = tables.get("users", {S.USER_ID: np.zeros(0, np.int64)})
  items = tables.get("items", {S.ITEM_ID: np.zeros(0, np.int64)})
  for name, table, key in (("users", users, S.USER_ID), ("items", items, S.ITEM_ID)):
    if name in tables:
      first_rows = np.sort(np.unique(table[key], return_index=True)[1])
      report.drop(name, f"duplicate {key} (first row kept)", len(table[key]) - len(first_rows))
      tables[name] = {k: v[first_rows] for k, v in table.items() if k != "_line"}
      report.keep(name, len(first_rows))
  users, items = tables.get("users", users), tables.get("items", items)
  n_known = {S.USER_ID: len(ids[S.USER_ID]), S.ITEM_ID: len(ids[S.ITEM_ID])}
  imp_path = os.path.join(input_dir, contract["impressions"]["file"])
  has_day = any(c["file"] == "impressions" and c["role"] == S.DAY for c in contract["columns"])
  clock = clock_lib.Clock(str(contract["timezone"]))
  impressions = SP.ImpressionSpool(os.path.join(spool_dir, "impressions"),
                                   SP.GIVEN_DAYS if has_day else SP.UNIX_DAYS, clock)
  owners = _RequestOwners()
  pending = []  # rows of split requests, given their final ids once every id is known
  for imp in _chunks(input_dir, contract, "impressions", report, ids, chunk_rows, encoders):
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
    rows[S.REQUEST_ID], moved = owners.split(rows.pop(f"_raw_{S.REQUEST_ID}"),
                                             rows[S.REQUEST_ID], rows[S.USER_ID],
                                             rows.pop(f"_raw_{S.USER_ID}"))
    report.adjust("impressions", SHARED_REQUEST, moved)
    if moved:
      pending.append({k: v[rows[S.REQUEST_ID] < 0] for k, v in rows.items()})
      rows = {k: v[rows[S.REQUEST_ID] >= 0] for k, v in rows.items()}
    _add(impressions, rows, imp_path)
  for rows in pending:  # a split-off request's id comes after every raw request's
    rows[S.REQUEST_ID] = len(ids[S.REQUEST_ID]) - 1 - rows[S.REQUEST_ID]
    _add(impressions, rows, imp_path)
  behaviour = None
  if "behaviour" in contract:
    behaviour = SP.BehaviourSpool(os.path.join(spool_dir, "behaviour"), clock)
    for events in _chunks(input_dir, contract, "behaviour", report, ids, chunk_rows,
                          encoders):
      known = ((events[S.ITEM_ID] < n_known[S.ITEM_ID]) if "items" in tables
               else np.ones(len(events[S.ITEM_ID]), bool))
      report.drop("behaviour", "item_id not in the items file", int((~known).sum()))
      behaviour.add_events({k: v[known] for k, v in events.items() if k != "_line"})
      report.keep("behaviour", int(known.sum()))
  specs = [c["_spec"] for c in contract["columns"] if "_spec" in c]
  facts = {"source": "contract",
           "contract": {k: v for k, v in contract.items() if k != "columns"}
           | {"columns": [{k: v for k, v in c.items() if k != "_spec"}
                          for c in contract["columns"]]},
           **declaration.encoder_facts(encoders)}
  return W.LogTables(impressions, users, items, [W.InputFile(imp_path, "impressions")],
                     behaviour, dedupe=True, facts=facts, features=specs), report


def _add(spool: SP.ImpressionSpool, rows: Dict[str, np.ndarray], path: str) -> None:
  """Spools rows; a given day that disagrees with its timestamp is refused at its line."""
  try:
    spool.add_rows(rows)
  except SP.DayMismatch as error:
    raise R.IngestError(path, int(rows[SP.LINE][error.row]), f"day {error.day} is not the "
                        f"local day of its timestamp {int(rows[S.TIMESTAMP][error.row])} in "
                        f"the declared timezone ({spool.clock.timezone}): expected day "
                        f"{error.expected}, as the earlier rows' days and timestamps give")
