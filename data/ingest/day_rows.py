"""One day's impressions, as the world builder takes them from the spool: checked and on the
world's clock, in slices of whole requests in time order when the day is large (so that
memory follows the slice, not the day: Ali-CCP's splits are one day each).

In order, each step naming the input file and line of a row it refuses, and counting by
reason (under the row's input file) each row it drops or changes:

  1. final request ids (the adapter's codes, or the rank of a (user, time) pair);
  2. repeated rows dropped, the first kept: a repeated (request, item) for sources that ask
     for it (`dedupe`), else a repeated (request, item, timestamp), e.g. a log appended twice;
  3. no timestamp may go backwards inside a request (a request takes its first row's time);
  4. values: every numeric impression feature and gmv finite and >= 0 (as a world's are); a
     categorical id at or above its vocabulary becomes the out-of-vocabulary id;
  5. a conversion on an unclicked row is kept as an unclicked impression without conversion
     (a purchase the feed did not lead to; the CVR stage learns on clicks only);
  6. the world's clock: every row of a request at the request's first timestamp, in seconds
     since the start of day 1 (`origin`, data/ingest/clock.py).
"""

import os
from typing import Dict, Iterator, List, Optional, Sequence, cast

import numpy as np
import pandas as pd

from data.ingest import report as R
from data.ingest import spool as SP
from data.plumbing import files as files_lib
from data.world import integrity
from data.world import schema as S
from data.world.config import SECONDS_PER_DAY

DUPLICATE = "duplicate (request, item): first kept"
EXACT_DUPLICATE = "duplicate row (same request, item and timestamp): first kept"
CONVERSION_WITHOUT_CLICK = "conversion on an unclicked row: kept unclicked, conversion set to 0"
SLICE_ROWS = 1 << 19  # rows of a day built at once (a bigger day is built in slices)
Arrays = Dict[str, np.ndarray]


class DayRows:
  """Reads and checks the days of one spool, in order."""

  def __init__(self, spool: SP.ImpressionSpool, paths: Sequence[str], names: Sequence[str],
               schema: S.Schema, sizes: Dict[str, int], dedupe: bool, report: R.RowReport,
               slice_rows: int = SLICE_ROWS):
    self.spool, self.paths, self.names = spool, list(paths), list(names)
    self.schema, self.sizes, self.dedupe, self.report = schema, sizes, dedupe, report
    self.origin = spool.origin()
    self.slice_rows = max(1, int(slice_rows))

  def slices(self, partition: Optional[int], day: int) -> Iterator[Arrays]:
    """The day's impressions (partition None: an empty day), steps 1-6, in slices of at most
    about `slice_rows` rows: whole requests, in the order of their time (then of their first
    row), so that a
    day far larger than the machine's memory is built a slice at a time. A day that fits in
    one slice is one slice."""
    if self.spool.rows_in(partition) <= self.slice_rows:
      yield self._checked(self.spool.read(partition), day)
      return
    slice_of_row = self._slice_of_rows(partition)
    staging = SP.DaySpool(os.path.join(os.path.dirname(self.spool.directory), f"slices-{day}"))
    offset = 0
    for rows in self.spool.read_parts(cast(int, partition)):  # None has no rows: returned above
      n = len(rows[S.USER_ID])
      staging.add(slice_of_row[offset:offset + n], rows)
      offset += n
    del slice_of_row
    try:
      for index in staging.partitions():
        yield self._checked(staging.read(index), day)
    finally:
      files_lib.remove_tree(staging.directory)

  def _slice_of_rows(self, partition: Optional[int]) -> np.ndarray:
    """The slice of each of the partition's rows (in the order added)."""
    names = [n for n in (S.REQUEST_ID, SP.REQUEST_A, SP.REQUEST_B) if n in self.spool.columns()]
    keys = self.spool.read(partition, names + [S.TIMESTAMP])
    ids = self.spool.request_ids(keys)
    _, first, inverse, counts = np.unique(ids, return_index=True, return_inverse=True,
                                          return_counts=True)
    # By time, ties in input order: the order the whole-day build keeps for tied events.
    order = np.lexsort((first, keys[S.TIMESTAMP][first]))
    start = np.cumsum(counts[order]) - counts[order]
    of_request = np.empty(len(first), np.int64)
    of_request[order] = start // self.slice_rows
    return of_request[inverse.reshape(-1)]

  def _checked(self, imp: Arrays, day: int) -> Arrays:
    spool = self.spool
    imp[S.REQUEST_ID] = spool.request_ids(imp).astype(np.int64)
    files = imp.pop(SP.FILE).astype(np.int64)
    lines = imp.pop(SP.LINE).astype(np.int64)
    for name in (SP.REQUEST_A, SP.REQUEST_B, S.DAY):
      imp.pop(name, None)
    keep = ~self._duplicates(imp)
    self._count(files[~keep], DUPLICATE if self.dedupe else EXACT_DUPLICATE)
    if not keep.all():
      imp = {k: v[keep] for k, v in imp.items()}
      files, lines = files[keep], lines[keep]
    timestamps = np.asarray(imp[S.TIMESTAMP], np.int64)
    R.check_monotone_in_request(self.paths, files, lines, imp[S.REQUEST_ID], timestamps)
    self._check_values(imp, files, lines)
    self._labels(imp, files)
    n = len(imp[S.REQUEST_ID])
    _, first, inverse = np.unique(imp[S.REQUEST_ID], return_index=True, return_inverse=True)
    world_time = timestamps[first][inverse.reshape(-1)] - self.origin
    if n and not ((world_time // SECONDS_PER_DAY) + 1 == day).all():
      raise AssertionError(f"day {day}: a request's time is outside the day (ingest bug)")
    imp[S.DAY] = np.full(n, day, np.int64)
    imp[S.TIMESTAMP] = world_time
    imp.setdefault(S.POSITION, np.zeros(n, np.int64))
    return imp

  def _duplicates(self, imp: Arrays) -> np.ndarray:
    keys = {"r": imp[S.REQUEST_ID], "i": imp[S.ITEM_ID]}
    if not self.dedupe:
      keys["t"] = imp[S.TIMESTAMP]
    return cast(np.ndarray, pd.DataFrame(keys).duplicated().to_numpy())

  def _count(self, files: np.ndarray, reason: str, adjusted: bool = False) -> None:
    """Counts rows (by their input file) dropped, or kept but changed, for `reason`."""
    for index, n in enumerate(np.bincount(files, minlength=len(self.names)).tolist()):
      if adjusted:
        self.report.adjust(self.names[index], reason, n)
      else:
        self.report.drop_kept(self.names[index], reason, n)

  def _check_values(self, imp: Arrays, files: np.ndarray, lines: np.ndarray) -> None:
    """Step 4: refuses a value no world may hold, naming its line; clips ids to the OOV id."""
    for name in list(imp):
      if name in self.sizes:  # a categorical impression feature
        values = np.asarray(imp[name], np.int64)
        self._refuse(name, values < 0, values, files, lines, "an id >= 0")
        over = values >= self.sizes[name]
        self._count(files[over], f"{name}: id at or above its vocabulary "
                    f"{self.sizes[name]}, stored as the out-of-vocabulary id", adjusted=True)
        imp[name] = np.minimum(values, self.sizes[name])
      elif name == S.GMV or (name in self.schema.names
                             and self.schema[name].kind == S.NUMERIC):
        values = np.asarray(imp[name], np.float64)
        as_float32 = values.astype(np.float32)
        with np.errstate(invalid="ignore"):
          bad = ~np.isfinite(as_float32) | (values < 0)
        self._refuse(name, bad, values, files, lines, "a finite number >= 0")
        imp[name] = as_float32

  def _refuse(self, name: str, bad: np.ndarray, values: np.ndarray, files: np.ndarray,
              lines: np.ndarray, expected: str) -> None:
    if bad.any():
      i = int(np.argmax(bad))
      raise R.IngestError(self.paths[files[i]], int(lines[i]),
                          f"{name}: expected {expected}, got {values[i]}")

  def _labels(self, imp: Arrays, files: np.ndarray) -> None:
    """0/1 labels (checked by the adapters; here as a world's), step 5."""
    n = len(imp[S.REQUEST_ID])
    for label in S.LABELS:
      imp[label] = np.asarray(imp.get(label, np.zeros(n)), np.float32)
    for label in integrity.BINARY_LABELS:
      values = imp[label]
      if not np.isin(values, (0.0, 1.0)).all():
        raise AssertionError(f"{label}: a value other than 0 or 1 passed the adapter")
    unclicked_conversion = (imp[S.CONVERSION] > 0) & (imp[S.CLICK] == 0)
    if unclicked_conversion.any():
      self._count(files[unclicked_conversion], CONVERSION_WITHOUT_CLICK, adjusted=True)
      imp[S.CONVERSION] = np.where(unclicked_conversion, 0.0, imp[S.CONVERSION]).astype(
          np.float32)
      imp[S.GMV] = np.where(unclicked_conversion, 0.0, imp[S.GMV]).astype(np.float32)


def categorical_sizes(schema: S.Schema, names: List[str]) -> Dict[str, int]:
  """{name: vocabulary} of the categorical impression features among `names`."""
  return {n: schema[n].vocab_size for n in names
          if n in schema.names and schema[n].entity == S.PAIR
          and schema[n].kind == S.CATEGORICAL}
