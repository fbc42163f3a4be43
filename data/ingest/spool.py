"""Parsed rows spilled to disk by day, so an ingest holds one day at a time, not the whole log.

Adapters stream their input in chunks; each chunk's canonical rows go to a `DaySpool`: one
directory per partition (a day key), one Parquet part file per chunk and partition, in the
order written. The world builder then reads the partitions back one at a time, in day order
(data/ingest/world_builder.py). The spool lives in a temporary directory next to the world
and is removed at the end, whatever happens.

`ImpressionSpool` puts every row of a request in the partition of the request's first row, so
a day holds whole requests, and gives requests their final ids: either the adapter's dense
codes, or (for sources whose request is a (user, time) pair) the pair's rank among all pairs,
the order a global `np.unique` over the whole log gives. Days are the source's local days
(data/ingest/clock.py), or the adapter's own numbering; the spool records where the first
and the last day's rows came from, so a span of days too long to be real names its line.
"""

import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.ingest.clock import Clock
from data.world import schema as S

# Day keys of the impression partitions (ImpressionSpool `days`):
UNIX_DAYS = "unix"  # the local day of the request's first timestamp; the first one is day 1
GIVEN_DAYS = "given"  # the adapter's 1-based S.DAY column, which its timestamps must agree with
# Columns of the rows that are not the world's: where each row came from, for error messages,
# and the (user, time) pair a ranked request id is the rank of.
FILE, LINE = "_file", "_line"
REQUEST_A, REQUEST_B = "_request_a", "_request_b"
_UNSEEN = np.iinfo(np.int64).min


class DaySpool:
  """Rows of fixed columns in Parquet part files, by partition, read back a partition at a
  time in the order they were added."""

  def __init__(self, directory: str):
    self.directory = directory
    os.makedirs(directory, exist_ok=True)
    self._parts: Dict[int, int] = {}
    self._rows: Dict[int, int] = {}
    self._dtypes: Optional[Dict[str, np.dtype]] = None
    self.rows = 0

  def add(self, partition: np.ndarray, columns: Dict[str, np.ndarray]) -> None:
    """Appends rows (every column the same length) to the partitions `partition` names."""
    columns = {k: np.asarray(v) for k, v in columns.items()}
    dtypes = {k: v.dtype for k, v in columns.items()}
    if self._dtypes is None:
      self._dtypes = dtypes
    elif dtypes != self._dtypes:
      raise ValueError(f"spool {self.directory}: columns {dtypes} differ from {self._dtypes}")
    partition = np.asarray(partition, np.int64)
    order = np.argsort(partition, kind="stable")
    keys, starts = np.unique(partition[order], return_index=True)
    for key, rows in zip(keys.tolist(), np.split(order, starts[1:])):
      part = self._parts.get(key, 0)
      path = os.path.join(self.directory, f"day={key}", f"part-{part:06d}.parquet")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      pq.write_table(pa.table({k: v[rows] for k, v in columns.items()}), path,
                     compression="lz4")
      self._parts[key] = part + 1
      self._rows[key] = self._rows.get(key, 0) + len(rows)
    self.rows += len(partition)

  def rows_in(self, partition: Optional[int]) -> int:
    return self._rows.get(partition, 0) if partition is not None else 0

  def partitions(self) -> List[int]:
    return sorted(self._parts)

  def columns(self) -> List[str]:
    """The spool's column names (none before the first rows)."""
    return list(self._dtypes or {})

  def read(self, partition: Optional[int],
           columns: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """The partition's rows in the order added (none, or no such partition: empty columns of
    the spool's dtypes)."""
    names = list(columns or (self._dtypes or {}))
    if partition not in self._parts:
      return {k: np.zeros(0, (self._dtypes or {}).get(k, np.int64)) for k in names}
    table = pa.concat_tables([self._part(partition, part, names)
                              for part in range(self._parts[partition])])
    return {k: table.column(k).to_numpy() for k in names}

  def read_parts(self, partition: int,
                 columns: Optional[Sequence[str]] = None) -> Iterator[Dict[str, np.ndarray]]:
    """The partition's rows one part file at a time, in the order added."""
    names = list(columns or (self._dtypes or {}))
    for part in range(self._parts.get(partition, 0)):
      table = self._part(partition, part, names)
      yield {k: table.column(k).to_numpy() for k in names}

  def _part(self, partition: int, part: int, names: Optional[List[str]]) -> pa.Table:
    return pq.read_table(os.path.join(self.directory, f"day={partition}",
                                      f"part-{part:06d}.parquet"), columns=names)


class DayMismatch(ValueError):
  """A row whose given day disagrees with its timestamp's local day (GIVEN_DAYS)."""

  def __init__(self, row: int, day: int, expected: int):
    super().__init__(f"row {row}: day {day}, its timestamp's local day is day {expected}")
    self.row, self.day, self.expected = row, day, expected


class ImpressionSpool(DaySpool):
  """Impression rows by the day key of their request (`days`: UNIX_DAYS or GIVEN_DAYS), on
  the local days of `clock`.

  Rows carry S.REQUEST_ID (dense codes >= 0, in any order) or, for ranked request ids, the
  pair REQUEST_A, REQUEST_B whose rank is the id. With GIVEN_DAYS every row's day must be its
  timestamp's local day, numbered from the first (DayMismatch otherwise). Tracks the largest
  value of every integer column, and the rows of the first and the last day.
  """

  def __init__(self, directory: str, days: str, clock: Optional[Clock] = None):
    if days not in (UNIX_DAYS, GIVEN_DAYS):
      raise ValueError(f"days must be {UNIX_DAYS} or {GIVEN_DAYS}, got {days!r}")
    super().__init__(directory)
    self.days = days
    self.clock = clock or Clock()
    self._first_key = np.zeros(0, np.int64)  # day key of each request's first row
    self.max_id = {S.USER_ID: -1, S.ITEM_ID: -1}
    self.max_value: Dict[str, int] = {}
    self.extremes: Dict[str, Tuple[int, int, int, int]] = {}  # (key, file, line, timestamp)
    self._shift: Optional[int] = None  # GIVEN_DAYS: local day - given day
    self._pairs: Optional[np.ndarray] = None

  def add_rows(self, columns: Dict[str, np.ndarray]) -> None:
    """Appends rows in input order."""
    n = len(columns[S.USER_ID])
    if not n:
      return
    for key in self.max_id:
      self.max_id[key] = max(self.max_id[key], int(np.max(columns[key])))
    for name, values in columns.items():
      if np.asarray(values).dtype.kind in "iu" and not name.startswith("_"):
        self.max_value[name] = max(self.max_value.get(name, 0), int(np.max(values)))
    timestamps = np.asarray(columns[S.TIMESTAMP], np.int64)
    self.clock.observe(int(timestamps[0]))
    local = self.clock.local_day(timestamps)
    if self.days == UNIX_DAYS:
      day_key = local
    else:
      day_key = np.asarray(columns[S.DAY], np.int64)
      shift = local - day_key
      if self._shift is None:
        self._shift = int(shift[0])
      wrong = np.flatnonzero(shift != self._shift)
      if len(wrong):
        i = int(wrong[0])
        raise DayMismatch(i, int(day_key[i]), int(local[i] - self._shift))
    if S.REQUEST_ID in columns:
      day_key = self._request_day_keys(np.asarray(columns[S.REQUEST_ID], np.int64), day_key)
    self._track_extremes(day_key, columns, timestamps)
    self.add(day_key, columns)

  def _track_extremes(self, day_key: np.ndarray, columns: Dict[str, np.ndarray],
                      timestamps: np.ndarray) -> None:
    files = columns.get(FILE, np.zeros(len(day_key), np.int64))
    lines = columns.get(LINE, np.zeros(len(day_key), np.int64))
    for name, index in (("first", int(np.argmin(day_key))), ("last", int(np.argmax(day_key)))):
      known = self.extremes.get(name)
      key = int(day_key[index])
      if known is None or (key < known[0] if name == "first" else key > known[0]):
        self.extremes[name] = (key, int(files[index]), int(lines[index]),
                               int(timestamps[index]))

  def _request_day_keys(self, requests: np.ndarray, day_key: np.ndarray) -> np.ndarray:
    """The day key of each row's request: that of the request's first row (across chunks)."""
    size = int(requests.max()) + 1
    if size > len(self._first_key):
      grown = np.full(max(size, 2 * len(self._first_key)), _UNSEEN, np.int64)
      grown[:len(self._first_key)] = self._first_key
      self._first_key = grown
    unseen = np.flatnonzero(self._first_key[requests] == _UNSEEN)
    new, first = np.unique(requests[unseen], return_index=True)
    self._first_key[new] = day_key[unseen[first]]
    return cast(np.ndarray, self._first_key[requests])

  def span_days(self) -> int:
    """Days from the first day with a row to the last, both included."""
    keys = self.partitions()
    return keys[-1] - keys[0] + 1 if keys else 0

  def world_days(self) -> Dict[int, int]:
    """{partition: world day 1..n}: local days counted from the first, given days as they are."""
    keys = self.partitions()
    if self.days == UNIX_DAYS:
      return {k: k - keys[0] + 1 for k in keys}
    return {k: k for k in keys}

  def first_local_day(self) -> int:
    """The local day number of world day 1."""
    if self.days == UNIX_DAYS:
      return self.partitions()[0]
    return 1 + (self._shift or 0)

  def origin(self) -> int:
    """Unix time of the start of world day 1: the world's clock is unix time - origin."""
    return self.clock.day_start(self.first_local_day())

  def request_ids(self, rows: Dict[str, np.ndarray]) -> np.ndarray:
    """The final request ids of a partition's rows."""
    if S.REQUEST_ID in rows:
      return rows[S.REQUEST_ID]
    if self._pairs is None:
      self._pairs = self._ranked_pairs()
    return np.searchsorted(self._pairs, self._pack(rows[REQUEST_A], rows[REQUEST_B]))

  def n_requests(self) -> int:
    """One more than the largest request id of the spool."""
    if S.REQUEST_ID in (self._dtypes or {}):
      return self.max_value.get(S.REQUEST_ID, -1) + 1
    if self._pairs is None:
      self._pairs = self._ranked_pairs()
    return len(self._pairs)

  def _ranked_pairs(self) -> np.ndarray:
    """Every distinct (a, b) pair of the spool, packed so that sorting them sorts the pairs."""
    a_parts, b_parts = [], []
    for key in self.partitions():
      rows = self.read(key, [REQUEST_A, REQUEST_B])
      a, b = rows[REQUEST_A], rows[REQUEST_B]
      order = np.lexsort((b, a))
      a, b = a[order], b[order]
      distinct = np.ones(len(a), bool)
      distinct[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
      a_parts.append(a[distinct])
      b_parts.append(b[distinct])
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    self._b_values = np.unique(b)
    if a.min(initial=0) < 0 or (int(a.max(initial=0)) + 1) * len(self._b_values) >= 2 ** 62:
      raise ValueError("ranked request ids: the first key must be a code >= 0, and codes x "
                       "distinct second keys < 2^62")
    return np.unique(self._pack(a, b))

  def _pack(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.asarray(a, np.int64) * len(self._b_values)
            + np.searchsorted(self._b_values, np.asarray(b, np.int64)))


class BehaviourSpool(DaySpool):
  """A behaviour log (user_id, item_id, timestamp in unix seconds) by local day of `clock`
  (the impressions' clock)."""

  def __init__(self, directory: str, clock: Optional[Clock] = None):
    super().__init__(directory)
    self.clock = clock or Clock()

  def add_events(self, columns: Dict[str, np.ndarray]) -> None:
    timestamps = np.asarray(columns[S.TIMESTAMP], np.int64)
    if len(timestamps):
      self.clock.observe(int(timestamps[0]))
    self.add(self.clock.local_day(timestamps), columns)

  def world_day(self, day: int, origin: int) -> Dict[str, np.ndarray]:
    """Events of one world day, their timestamps on the world's clock (seconds since
    `origin`, the unix start of day 1)."""
    rows = self.read(day - 1 + int(self.clock.local_day(origin)))
    rows[S.TIMESTAMP] = rows[S.TIMESTAMP] - origin
    return rows
