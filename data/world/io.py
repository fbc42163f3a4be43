"""On-disk format of a world: atomic Parquet writes, the manifest, and the loader.

Layout of a world directory:
  manifest.json                      written last; config, seed, schema, row counts per day,
                                     sha256 + size of every file, world_hash, format_version
  users.parquet, items.parquet       observable entity columns (schema feature names)
  truth/users.parquet, truth/items.parquet, truth/categories.parquet   hidden ground truth
  truth/requests/day=NN/part-SSSSS.parquet   hidden per-request state (intent category/shop)
  logs/day=NN/part-SSSSS.parquet     one row per impression: ids, every scalar feature, labels
  requests/day=NN/part-SSSSS.parquet one row per request: the behaviour sequence and context

DESIGN DECISION: the behaviour sequence (hist_item_ids / hist_category_ids / hist_shop_ids and
hist_len) is a request-level feature. Repeating 3 x history_len ints on every impression would
cost ~14 GB raw on the medium world, so it is stored once per request under requests/ as
fixed-size list columns. In memory it stays one row per request too: `World.log_arrays` gives
each sequence column as a `RequestColumn` (the request table, int32 where the vocabulary
allows, and each impression's row in it), which expands only the rows a batch asks for.

Every file is written to a temporary name in its final directory and os.replace'd into place,
so no reader ever sees half a file; day directories are assembled under a temporary name and
renamed when complete; the manifest is written last. Without a manifest a directory is not a
world. Parquet writer options are fixed and no wall-clock time is stored, so the same config
and seed give byte-identical files.
"""

import functools
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.plumbing import files
from data.world import columns as columns_lib
from data.world import integrity
from data.world import schema as S
from data.world.config import WorldConfig
from data.world.declared import SCHEMA_DECLARED

# Days of a world: one day or several.
Days = Union[int, Iterable[int]]

if TYPE_CHECKING:  # imported where used, so that reading logs loads none of them
  from data.world.features import FeatureService
  from data.world.oracle import Oracle
  from data.world.simulation import Entities

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=True,
                       write_statistics=True, row_group_size=1 << 20, version="2.6")

# Feature columns come from the schema's declarations; the hidden truth is not in the schema.
# The behaviour sequence (S.BEHAVIOUR_FEATURES) is stored once per request, joined onto
# impressions by `World.log_arrays`.
REQUEST_COLUMNS = ((S.REQUEST_ID, S.USER_ID, S.DAY, S.TIMESTAMP) + S.CONTEXT_FEATURES
                   + S.BEHAVIOUR_FEATURES)
REQUEST_TRUTH_COLUMNS = (S.REQUEST_ID, "intent_category", "intent_shop")
USER_COLUMNS = (S.USER_ID,) + S.USER_PROFILE
ITEM_COLUMNS = (S.ITEM_ID,) + S.ITEM_PROFILE
USER_TRUTH_COLUMNS = (S.USER_ID, "user_taste", "user_pref_categories", "user_pref_weights",
                      "user_price_sensitivity")
ITEM_TRUTH_COLUMNS = (S.ITEM_ID, "item_quality", "item_taste", "item_popularity")
CATEGORY_TRUTH_COLUMNS = ("category_id", "category_popularity")
# Files every command reads whole, once: their sha256 is checked on every load (cheap).
ENTITY_FILES = ("users.parquet", "items.parquet", "truth/users.parquet", "truth/items.parquet",
                "truth/categories.parquet")


def user_columns(schema: S.Schema) -> Tuple[str, ...]:
  """Columns of users.parquet: the user id and the world's user profile features."""
  return (S.USER_ID,) + schema.names_of(S.USER, S.PROFILE)


def item_columns(schema: S.Schema) -> Tuple[str, ...]:
  """Columns of items.parquet: the item id and the world's item profile features."""
  return (S.ITEM_ID,) + schema.names_of(S.ITEM, S.PROFILE)


def log_columns(schema: S.Schema) -> List[str]:
  """Columns of logs/day=NN/*.parquet, in order: ids, scalar features, labels."""
  scalar = [f.name for f in schema.features
            if f.kind != S.SEQUENCE and f.name not in S.BEHAVIOUR_FEATURES]
  head = [S.REQUEST_ID, S.DAY, S.TIMESTAMP, S.POSITION, S.USER_ID, S.ITEM_ID]
  return head + [n for n in scalar if n not in head] + list(S.LABELS)


def day_dir(kind: str, day: int) -> str:
  """Relative directory of one day of `kind` (logs, requests or truth/requests)."""
  return os.path.join(kind, f"day={day:02d}")


def part_name(shard: int) -> str:
  return f"part-{shard:05d}.parquet"


# ----------------------------------------------------------------------------- writing


def to_table(arrays: Dict[str, np.ndarray], columns: Sequence[str]) -> pa.Table:
  """A pyarrow table of `columns`; 2-D arrays become fixed-size list columns."""
  fields = []
  for name in columns:
    values = np.ascontiguousarray(arrays[name])
    if values.ndim == 2:
      fields.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)),
                                                      values.shape[1]))
    else:
      fields.append(pa.array(values))
  return pa.table(fields, names=list(columns))


def write_table(table: pa.Table, path: str) -> None:
  """Writes `table` to `path` atomically with the world's fixed Parquet options."""
  files.write_parquet(path, table, **PARQUET_OPTIONS)


def sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def world_hash(config: Dict[str, Any], files: Dict[str, Dict[str, Any]],
               schema: Optional[List[Any]] = None) -> str:
  """Hash of the config, the format version and every file's sha256, and of the schema when
  the world declares its own (`data.world.declared`; the code's schema follows from the config)."""
  payload = {"format_version": FORMAT_VERSION, "config": config,
             "files": {path: entry["sha256"] for path, entry in sorted(files.items())}}
  if schema is not None:
    payload["schema"] = schema
  return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def manifest_world_hash(manifest: Dict[str, Any]) -> str:
  """The world_hash a manifest's content gives."""
  declared = manifest.get(SCHEMA_DECLARED)
  return world_hash(manifest["config"], manifest["files"],
                    manifest["schema"] if declared else None)


# ----------------------------------------------------------------------------- reading


def read_table(path: str, columns: Optional[Sequence[str]] = None) -> pa.Table:
  """Reads a Parquet file; errors name the file and the missing column."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: file listed in the manifest is missing")
  try:
    file_schema = pq.read_schema(path)
  except PermissionError:  # not a damaged file: say what it is
    raise PermissionError(13, "Permission denied", path) from None
  except (pa.ArrowException, OSError) as e:
    raise ValueError(f"{path}: not a readable Parquet file (corrupt or truncated?): {e}")
  if columns is not None:
    for name in columns:
      if name not in file_schema.names:
        raise ValueError(f"{path}: missing column {name!r} (has {file_schema.names})")
  try:
    return pq.read_table(path, columns=list(columns) if columns is not None else None)
  except (pa.ArrowException, OSError) as e:
    raise ValueError(f"{path}: not a readable Parquet file (corrupt or truncated?): {e}")


def column_array(table: pa.Table, name: str) -> np.ndarray:
  """A column as numpy; fixed-size list columns become 2-D arrays."""
  column = table.column(name).combine_chunks()
  if pa.types.is_fixed_size_list(column.type):
    width = column.type.list_size
    return cast(np.ndarray, column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width))
  return cast(np.ndarray, column.to_numpy(zero_copy_only=False))


def table_arrays(table: pa.Table) -> Dict[str, np.ndarray]:
  return {name: column_array(table, name) for name in table.column_names}


def _fits_int32(schema: S.Schema, name: str) -> bool:
  """Whether every id of `name` fits in int32 (its declared vocabulary does)."""
  return name in schema.names and 0 < schema[name].vocab_size <= np.iinfo(np.int32).max


RequestColumn = columns_lib.RequestColumn
NarrowColumn = columns_lib.NarrowColumn
# Row operations on column dicts live with the column types (data.world.columns).
take_rows = columns_lib.take_rows
append_rows = columns_lib.append_rows


def stage_columns(schema: S.Schema, stage: str) -> List[str]:
  """The log columns a stage's models read: every feature its student or teacher may read,
  the labels, the request, user and item ids (grouping, joins, evaluation) and the position
  (the oracle's click probability, for the run's ceiling and eAUC)."""
  features = [f.name for f in schema.features_for(stage, S.TEACHER)]
  ids = [S.REQUEST_ID, S.DAY, S.USER_ID, S.ITEM_ID, S.POSITION]
  return ids + [n for n in features if n not in ids] + list(S.LABELS)


ROWS = "rows"  # a request-level column's row index, while it is read


def _sorted_by_id(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  order = np.argsort(arrays[S.REQUEST_ID], kind="stable")
  return {k: v[order] for k, v in arrays.items()}


def _as_days(days: Days, known: Sequence[int]) -> List[int]:
  days = [int(days)] if isinstance(days, (int, np.integer)) else [int(d) for d in days]
  unknown = sorted(set(days) - set(known))
  if unknown:
    raise ValueError(f"days {unknown} are not in this world; it has days {list(known)}")
  return days


class World:
  """A generated world on disk: config, schema, entities, logs, oracle and feature service.

  Use `data.load(world_dir)`. Entity tables are indexed positionally by id (row i has id i).
  """

  def __init__(self, world_dir: str, manifest: Dict[str, Any]) -> None:
    self.world_dir = world_dir
    self.manifest = manifest
    self.config = WorldConfig.from_dict(manifest["config"])
    self.schema = S.Schema.from_json(manifest["schema"])
    self.world_hash = manifest["world_hash"]
    self.days = [int(d) for d in manifest["days"]]
    self.users = self._checked("users.parquet", user_columns(self.schema)).to_pandas()
    self.items = self._checked("items.parquet", item_columns(self.schema)).to_pandas()

  def _checked(self, relative: str, columns: Sequence[str]) -> pa.Table:
    """Reads a world file, refusing values outside their declared range (NaN, negative...)."""
    path = self._path(relative)
    table = read_table(path, columns)
    problems = integrity.value_problems(path, table, self.schema)
    if problems:
      raise ValueError("; ".join(problems) + " (damaged or edited; `python -m data.verify` "
                       "checks the whole world)")
    return table

  def _path(self, relative: str) -> str:
    return os.path.join(self.world_dir, relative)

  @property
  def default_eval_day(self) -> int:
    """The day stages evaluate on and the replay replays by default: the manifest's
    `default_eval_day` (a source's published test day) or the last day."""
    day = self.manifest.get("default_eval_day")
    return int(day) if day in self.days else self.days[-1]

  def eval_day(self, day: Optional[int], flag: str = "--eval_day") -> int:
    """The held-out day asked for (`default_eval_day` for None), or an error naming `flag`
    when the world has no such day: the one resolution of the stages' --eval_day and the
    replay's --day."""
    chosen = self.default_eval_day if day is None else int(day)
    if chosen not in self.days:
      from data.plumbing.command import UserError
      raise UserError(f"{flag}={chosen} is not a day of the world at {self.world_dir}: it has "
                      f"days {self.days[0]}..{self.days[-1]}")
    return chosen

  @property
  def has_oracle(self) -> bool:
    """False for a world ingested from real logs (data.ingest): it has no truth/."""
    return bool(self.manifest.get("has_oracle", True))

  def _require_oracle(self, what: str) -> None:
    if not self.has_oracle:
      raise ValueError(f"{self.world_dir}: no oracle for {what}: this world comes from "
                       f"real logs ({self.manifest.get('ingest', {}).get('source', 'ingested')}; "
                       "manifest has_oracle: false): only offline metrics are available")

  def _parts(self, kind: str, day: int) -> List[str]:
    prefix = day_dir(kind, day) + os.sep
    return [self._path(p) for p in sorted(self.manifest["files"]) if p.startswith(prefix)]

  def _read(self, kind: str, days: Days, columns: Sequence[str]) -> pa.Table:
    paths = [path for day in _as_days(days, self.days) for path in self._parts(kind, day)]
    tables = [self._checked(os.path.relpath(path, self.world_dir), columns) for path in paths]
    for path, table in zip(paths[1:], tables[1:]):
      for field in table.schema:
        expected = tables[0].schema.field(field.name).type
        if field.type != expected:
          raise ValueError(f"{path}: column {field.name!r} is {field.type}, {paths[0]} has "
                           f"{expected} (damaged or edited; regenerate the world)")
    return pa.concat_tables(tables)

  def logs(self, days: Days, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Impressions of `days` (int or iterable): scalar columns, one row per impression."""
    names = list(columns) if columns is not None else log_columns(self.schema)
    return self._read("logs", days, names).to_pandas()

  def requests(self, days: Days) -> pd.DataFrame:
    """Requests of `days`: ids, context and the behaviour sequence (list columns)."""
    return self._read("requests", days, REQUEST_COLUMNS).to_pandas()

  def request_arrays(self, days: Days,
                     columns: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Requests of `days` as numpy: sequences int64[n, L], hist_len float32, ids int64."""
    table = self._read("requests", days, list(columns) if columns else REQUEST_COLUMNS)
    return {k: self._typed(k, v) for k, v in table_arrays(table).items()}

  def log_arrays(self, days: Days, columns: Optional[Sequence[str]] = None,
                 narrow: bool = False) -> Dict[str, Any]:
    """Impressions of `days` as numpy, every column incl. the joined behaviour sequence.

    Categorical features int64, numeric features float32, labels float32, ids / day /
    timestamp / position int64. The behaviour sequence columns (S.BEHAVIOUR_FEATURES) stay one
    row per request: each is a `RequestColumn` that expands only the rows it is indexed with
    (`column[rows]` -> int64 [k, L]; `np.asarray(column)` expands all of them). `columns`
    restricts the output (read only those from disk).
    Days are read one at a time, each converted before the next is read, so reading costs
    one day's Arrow table besides the result. narrow=True keeps every column in the
    narrowest dtype that holds its values exactly (`data.world.columns.NarrowColumn`, request tables
    too): the same values at a fraction of the bytes, for the rows a training run keeps.
    """
    wanted = list(columns) if columns is not None else (log_columns(self.schema)
                                                        + list(S.BEHAVIOUR_FEATURES))
    known = set(log_columns(self.schema)) | set(S.BEHAVIOUR_FEATURES)
    unknown = [c for c in wanted if c not in known]
    if unknown:
      raise ValueError(f"unknown log columns {unknown}; expected names from {sorted(known)}")
    scalar = [c for c in wanted if c not in S.BEHAVIOUR_FEATURES]
    joined = [c for c in wanted if c in S.BEHAVIOUR_FEATURES]
    read = scalar + ([S.REQUEST_ID] if joined and S.REQUEST_ID not in scalar else [])
    day_list = _as_days(days, self.days)
    impressions = columns_lib.Filler(sum(self._count("logs", day) for day in day_list))
    requests = columns_lib.Filler(
        sum(self._count("requests", day) for day in day_list) if joined else 0)
    rows = columns_lib.Filler(impressions.n if joined else 0)
    ragged: Dict[str, List[columns_lib.RaggedTable]] = {}
    for day in day_list:  # one day in memory at a time, besides the result
      day_rows = self._typed_columns(self._read("logs", [day], read), narrow=narrow)
      if joined:
        day_requests = self._typed_columns(
            self._read("requests", [day], [S.REQUEST_ID] + joined), compact=True, narrow=narrow)
        request_ids = day_requests.pop(S.REQUEST_ID)
        day_index = self._request_rows(day, request_ids, day_rows[S.REQUEST_ID])
        rows.extend({ROWS: (day_index + requests.filled).astype(
            np.int32 if requests.n < 2 ** 31 else np.int64)}, len(day_index))
        for name in list(day_requests):
          if narrow and day_requests[name].ndim == 2:  # a sequence: its padding left out
            ragged.setdefault(name, []).append(columns_lib.RaggedTable.from_dense(
                day_requests.pop(name), S.PAD_ID))
        requests.extend(day_requests, len(request_ids))
      impressions.extend(day_rows, len(next(iter(day_rows.values()))) if day_rows else 0)
    arrays: Dict[str, Any] = {}
    for name in read:
      arrays[name] = impressions.column(name, self._dtype(name))
    index = rows.column(ROWS, None, keep=True)
    for name in joined:
      table = (columns_lib.RaggedTable.concatenate(ragged.pop(name)) if name in ragged
               else requests.column(name, None))
      arrays[name] = RequestColumn(table, index, self._dtype(name))
    return {name: arrays[name] for name in wanted}

  def _count(self, kind: str, day: int) -> int:
    """Rows of `kind`'s files of `day`, from their Parquet footers."""
    return sum(pq.read_metadata(path).num_rows for path in self._parts(kind, day))

  def _request_rows(self, day: int, request_ids: np.ndarray,
                    impression_requests: np.ndarray) -> np.ndarray:
    """Each impression's row in its day's request table (by request id)."""
    order = np.argsort(request_ids, kind="stable")
    found = np.searchsorted(request_ids, impression_requests, sorter=order)
    rows = order[np.minimum(found, max(len(order) - 1, 0))]
    if len(impression_requests) and not np.array_equal(request_ids[rows],
                                                       impression_requests):
      raise ValueError(f"{self._path(day_dir('logs', day))}: impressions of requests missing "
                       f"from {day_dir('requests', day)} (damaged or edited; regenerate the "
                       "world)")
    return rows

  def _typed_columns(self, table: pa.Table, compact: bool = False,
                     narrow: bool = False) -> Dict[str, np.ndarray]:
    """Every column of `table` as typed numpy, releasing each Arrow column once converted.

    compact=True keeps id columns whose vocabulary fits in int32 as int32 (request-level
    sequences, expanded to their schema dtype by `RequestColumn`); narrow=True keeps each
    column in the narrowest dtype that holds its values exactly (`data.world.columns`).
    """
    out = {}
    for name in table.column_names:
      values = column_array(table, name)
      table = table.drop_columns([name])
      dtype = self._dtype(name)
      if compact and dtype == np.int64 and _fits_int32(self.schema, name):
        dtype = np.dtype(np.int32)
      out[name] = values.astype(dtype, copy=False)
      del values
      if narrow and name != S.REQUEST_ID:
        out[name] = columns_lib.narrowed(out[name])
    return out

  def _dtype(self, name: str) -> np.dtype:
    if name in S.LABELS:
      return np.dtype(np.float32)
    if name in self.schema.names:
      return np.dtype(self.schema[name].dtype)
    return np.dtype(np.int64)

  def _typed(self, name: str, values: np.ndarray) -> np.ndarray:
    return values.astype(self._dtype(name), copy=False)

  def request_truth(self, days: Optional[Days] = None) -> Dict[str, np.ndarray]:
    """Hidden per-request state (intent category / shop) with user and time, by request_id."""
    self._require_oracle("request_truth")
    days = self.days if days is None else days
    truth = table_arrays(self._read("truth/requests", days, REQUEST_TRUTH_COLUMNS))
    requests = self.request_arrays(days, [S.REQUEST_ID, "user_id", S.TIMESTAMP])
    out = _sorted_by_id(requests)
    truth = _sorted_by_id(truth)
    if not np.array_equal(truth[S.REQUEST_ID], out[S.REQUEST_ID]):
      raise ValueError(f"{self._path('truth/requests')}: request ids differ from requests/")
    for name in ("intent_category", "intent_shop"):
      out[name] = truth[name].astype(np.int64)
    return out

  @functools.cached_property
  def entities(self) -> "Entities":
    """Every user and item attribute, observable and hidden (world.Entities)."""
    self._require_oracle("entities")
    from data.world.simulation import Entities
    users = table_arrays(self._checked("truth/users.parquet", USER_TRUTH_COLUMNS))
    items = table_arrays(self._checked("truth/items.parquet", ITEM_TRUTH_COLUMNS))
    categories = table_arrays(self._checked("truth/categories.parquet", CATEGORY_TRUTH_COLUMNS))
    observable = {**{c: self.users[c].to_numpy() for c in S.USER_PROFILE},
                  **{c: self.items[c].to_numpy() for c in S.ITEM_PROFILE}}
    hidden = {**{c: users[c] for c in USER_TRUTH_COLUMNS[1:]},
              **{c: items[c] for c in ITEM_TRUTH_COLUMNS[1:]}}
    return Entities(**observable, **hidden,
                    category_popularity=categories["category_popularity"])

  @functools.cached_property
  def features(self) -> "FeatureService":
    """FeatureService over the whole world's logs (built on first use)."""
    from data.world.features import FeatureService
    requests = _sorted_by_id(
        self.request_arrays(self.days, [S.REQUEST_ID, "user_id", S.TIMESTAMP]))
    imp = self.log_arrays(self.days, ["user_id", "item_id", S.TIMESTAMP, S.POSITION, S.CLICK],
                          narrow=True)  # every day's impressions: at a third of the bytes
    click = imp.pop(S.CLICK) > 0
    clicks = {k: v[click] for k, v in imp.items()}
    users = {c: self.users[c].to_numpy() for c in user_columns(self.schema)}
    items = {c: self.items[c].to_numpy() for c in item_columns(self.schema)}
    return FeatureService(self.config, users, items, requests, imp, clicks, self.schema)

  @functools.cached_property
  def oracle(self) -> "Oracle":
    """The ground-truth Oracle (P(click), P(conversion | click)) for any pairs."""
    self._require_oracle("the oracle")
    from data.world.oracle import Oracle
    return Oracle(self.config, self.entities, self.request_truth(), self.features)


def open_world(world_dir: str) -> "World":
  """The world a command reads: checked by size (`load(verify="size")`), its oracle's inputs
  range-checked, with one line saying what to run when there is none. The one way commands
  open a world."""
  from data.plumbing.command import UserError  # the command layer's error; plain Python
  if os.path.exists(world_dir) and not os.path.isdir(world_dir):
    raise UserError(f"--world_dir={world_dir} is a file, not a world directory")
  if not os.path.exists(os.path.join(world_dir, MANIFEST)):
    raise UserError(f"no world at {world_dir} (no manifest.json); make one with "
                    f"`python -m data.generate --world_dir={world_dir} --preset=small`")
  world = load(world_dir, verify="size")
  if world.has_oracle:
    _ = world.entities  # the oracle's inputs, range-checked before anything is written
  return world


def load(world_dir: str, verify: Union[bool, str] = True) -> World:
  """Opens a generated world, checking it first.

  Always: the manifest's schema is the one the code declares for its config (the schema
  decides what a serving model may read, so it is never taken from an editable file), and
  values read later are checked against their declared ranges.
  verify=True: every file listed in the manifest exists, its sha256 matches, its Parquet
  footer is readable and has the expected columns. verify="size": the same with sizes instead
  of hashes (fast), except the entity tables every command reads whole, which are hashed.
  verify=False: only the manifest is parsed and its schema checked.
  Raises FileNotFoundError / ValueError naming the file (and column or field) at fault.
  """
  path = os.path.join(world_dir, MANIFEST)
  if os.path.exists(world_dir) and not os.path.isdir(world_dir):
    raise ValueError(f"--world_dir={world_dir} is a file, not a world directory")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no manifest; {world_dir!r} is not a generated world "
                            "(run: python -m data.generate --world_dir=...)")
  manifest = files.read_json(path)
  if not isinstance(manifest, dict):
    raise ValueError(f"{path}: manifest is not a JSON object")
  for key in ("format_version", "config", "schema", "days", "files", "world_hash"):
    if key not in manifest:
      raise ValueError(f"{path}: manifest lacks {key!r}")
  if manifest["format_version"] != FORMAT_VERSION:
    raise ValueError(f"{path}: format_version {manifest['format_version']}, this code reads "
                     f"{FORMAT_VERSION}; regenerate the world")
  problems = integrity.schema_problems(manifest)
  if problems:
    raise ValueError(f"{path}: {problems[0]}" + (f" (and {len(problems) - 1} more)"
                                                   if len(problems) > 1 else "")
                     + ("; a declared schema must follow data/world/declared.py's rules: ingest "
                        "the world again" if manifest.get(SCHEMA_DECLARED) else
                        "; the schema must be the code's: regenerate the world"))
  _check_days(path, manifest)
  if verify:
    verify_files(world_dir, manifest, hashes=verify is True)
  return World(world_dir, manifest)


def _check_days(path: str, manifest: Dict[str, Any]) -> None:
  """The manifest's days are the config's days, and every one has files."""
  expected = list(range(1, int(manifest["config"].get("n_days", 0)) + 1))
  if [int(d) for d in manifest["days"]] != expected:
    raise ValueError(f"{path}: 'days' is {manifest['days']}, the config's n_days gives "
                     f"{expected} (manifest edited?); regenerate the world")


def expected_columns(relative: str, schema: S.Schema) -> Sequence[str]:
  """The columns a world file must have, from its path."""
  if relative.startswith("logs/"):
    return log_columns(schema)
  if relative.startswith("requests/"):
    return REQUEST_COLUMNS
  if relative.startswith("truth/requests/"):
    return REQUEST_TRUTH_COLUMNS
  return {"users.parquet": user_columns(schema), "items.parquet": item_columns(schema),
          "truth/users.parquet": USER_TRUTH_COLUMNS, "truth/items.parquet": ITEM_TRUTH_COLUMNS,
          "truth/categories.parquet": CATEGORY_TRUTH_COLUMNS}.get(relative, ())


def verify_files(world_dir: str, manifest: Dict[str, Any], hashes: bool = True) -> None:
  """Checks every file of the manifest: presence, size or sha256, footer and columns."""
  schema = S.Schema.from_json(manifest["schema"])
  for relative, entry in sorted(manifest["files"].items()):
    path = os.path.join(world_dir, relative)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: listed in the manifest but missing")
    size = os.path.getsize(path)
    if size != entry["bytes"]:
      raise ValueError(f"{path}: {size} bytes, the manifest expects {entry['bytes']} "
                       "(truncated or modified)")
    if (hashes or relative in ENTITY_FILES) and sha256_file(path) != entry["sha256"]:
      raise ValueError(f"{path}: sha256 does not match the manifest (corrupt or modified)")
    columns = expected_columns(relative, schema)
    try:
      names = pq.read_schema(path).names
    except PermissionError:
      raise PermissionError(13, "Permission denied", path) from None
    except (pa.ArrowException, OSError) as e:
      raise ValueError(f"{path}: not a readable Parquet file (corrupt or truncated?): {e}")
    for name in columns:
      if name not in names:
        raise ValueError(f"{path}: missing column {name!r}")
  if manifest_world_hash(manifest) != manifest["world_hash"]:
    raise ValueError(f"{os.path.join(world_dir, MANIFEST)}: world_hash does not match the "
                     "config and file hashes (manifest edited?)")
