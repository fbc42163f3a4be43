"""`--source=kuairand`: KuaiRand (Kuaishou's video feed logs with random exposures).

Input, comma-separated with headers, as distributed: `log_standard_*.csv` (the feed's own
exposures), `log_random_*.csv` (videos the feed inserted at random, for the same users and
dates), `user_features*.csv` and `video_features_basic*.csv`. Log columns: user_id, video_id,
date, hourmin, time_ms, is_click, is_like, is_follow, long_view, play_time_ms,
profile_stay_time, comment_stay_time, is_profile_enter, ...; extra columns are ignored.

The random exposures are another exposure policy: `--kuairand_random=exclude` (the default)
leaves them out (counted), `apart` keeps them as requests of their own (never mixed into a
standard request of the same hour), `only` builds the world from them alone.

Time: `time_ms` is UTC milliseconds, `date` and `hourmin` are Beijing time, so days are cut
in Asia/Shanghai (data/ingest/clock.py), from time_ms. A request is one (user, date, hourmin):
the released logs give hourmin by the hour (1300 is 13:00-13:59), so a request is a user-hour
of the feed, often several videos; every row of it takes the time of its first row.

Features (the world declares its own, data/ingest/declaration.py): user_active_degree,
user_is_video_author and user_register_days_range (serving, dense codes); the video's first
`tag` is item_category, `author_id` item_shop, `music_id` item_music (no price). Labels:
is_click the click, long_view on a click the conversion-like label. privileged_post_click, on
clicked rows only (0 otherwise): dwell_seconds = play_time_ms / 1000, read_comments =
comment_stay_time > 0, entered_profile = is_profile_enter or profile_stay_time > 0,
followed_author = is_follow, liked = is_like. The cross features are derived point in time.
"""

import datetime
import glob
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple, cast

import numpy as np
import pandas as pd

from data.ingest import clock as clock_lib
from data.ingest import declaration
from data.ingest import report as R
from data.ingest import spool as SP
from data.ingest import world_builder as W
from data.world import schema as S

LOG_COLUMNS = ["user_id", "video_id", "date", "time_ms", "is_click", "is_like", "is_follow",
               "long_view", "play_time_ms", "profile_stay_time", "comment_stay_time",
               "is_profile_enter", "hourmin"]
USER_COLUMNS = ["user_id", "user_active_degree", "is_video_author", "register_days_range"]
VIDEO_COLUMNS = ["video_id", "author_id", "music_id", "tag"]
TIMEZONE = "Asia/Shanghai"
RANDOM_POLICIES = ("exclude", "apart", "only")
STANDARD, RANDOM = "log_standard_*.csv", "log_random_*.csv"
DATE_MISMATCH = "date is not time_ms's Beijing date (the day is time_ms's)"


def _spec(name: str, kind: str, entity: str, availability: str, description: str,
          **extra: Any) -> declaration.FeatureSpec:
  return declaration.FeatureSpec(name, kind, entity, availability, description=description,
                                 **extra)


FEATURES = [
    _spec("user_active_degree", S.CATEGORICAL, S.USER, S.SERVING, "user_active_degree",
          vocabulary="dense"),
    _spec("user_is_video_author", S.CATEGORICAL, S.USER, S.SERVING, "is_video_author"),
    _spec("user_register_days_range", S.CATEGORICAL, S.USER, S.SERVING, "register_days_range",
          vocabulary="dense"),
    _spec("item_category", S.CATEGORICAL, S.ITEM, S.SERVING, "the video's first tag",
          vocabulary="dense"),
    _spec("item_shop", S.CATEGORICAL, S.ITEM, S.SERVING, "author_id", vocabulary="dense"),
    _spec("item_music", S.CATEGORICAL, S.ITEM, S.SERVING, "music_id", vocabulary="dense"),
    _spec("dwell_seconds", S.NUMERIC, S.PAIR, S.PRIVILEGED_POST_CLICK,
          "play_time_ms / 1000 on a click"),
    _spec("read_comments", S.CATEGORICAL, S.PAIR, S.PRIVILEGED_POST_CLICK,
          "comment_stay_time > 0 on a click"),
    _spec("entered_profile", S.CATEGORICAL, S.PAIR, S.PRIVILEGED_POST_CLICK,
          "is_profile_enter or profile_stay_time > 0 on a click"),
    _spec("followed_author", S.CATEGORICAL, S.PAIR, S.PRIVILEGED_POST_CLICK,
          "is_follow on a click"),
    _spec("liked", S.CATEGORICAL, S.PAIR, S.PRIVILEGED_POST_CLICK, "is_like on a click"),
]


def _files(input_dir: str, pattern: str, what: str, required: bool = True) -> List[str]:
  paths = sorted(glob.glob(os.path.join(input_dir, pattern)))
  if not paths and required:
    raise R.IngestError(os.path.join(input_dir, pattern), None, f"missing file: expected {what}")
  return paths


def _numbers(path: str, chunk: pd.DataFrame, column: str) -> np.ndarray:
  values = chunk[column].fillna("0").to_numpy()
  return R.check_integers(path, chunk["_line"].to_numpy(), values, column)


# A file chunk's rows as columns (path, chunk -> {column: values}).
Convert = Callable[[str, pd.DataFrame], Dict[str, np.ndarray]]


def _table(paths: Sequence[str], columns: Sequence[str], name: str, report: R.RowReport,
           chunk_rows: int, convert: Convert) -> Dict[str, np.ndarray]:
  parts: Dict[str, List[np.ndarray]] = {}
  for path in paths:
    for chunk in R.read_csv_chunks(path, columns, dtype=str, chunk_rows=chunk_rows):
      report.add_read(name, len(chunk))
      for k, v in convert(path, chunk).items():
        parts.setdefault(k, []).append(v)
  table = {k: np.concatenate(v) for k, v in parts.items()}
  report.keep(name, len(next(iter(table.values()))) if table else 0)
  return table


def _videos(codes: Dict[str, R.Codes]) -> Convert:
  def convert(path: str, chunk: pd.DataFrame) -> Dict[str, np.ndarray]:
    first_tag = chunk["tag"].fillna("UNKNOWN").str.split(",").str[0]
    return {S.ITEM_ID: codes[S.ITEM_ID].encode(chunk["video_id"].to_numpy()),
            "item_category": codes["tag"].encode(first_tag.to_numpy()),
            "item_shop": codes["author"].encode(chunk["author_id"].fillna("").to_numpy()),
            "item_music": codes["music"].encode(chunk["music_id"].fillna("").to_numpy())}
  return convert


def _users(codes: Dict[str, R.Codes]) -> Convert:
  def convert(path: str, chunk: pd.DataFrame) -> Dict[str, np.ndarray]:
    author = _numbers(path, chunk, "is_video_author")
    if ((author != 0) & (author != 1)).any():
      i = int(np.argmax((author != 0) & (author != 1)))
      raise R.IngestError(path, int(chunk["_line"].iloc[i]), f"is_video_author must be 0 or "
                          f"1, got {author[i]}")
    return {S.USER_ID: codes[S.USER_ID].encode(chunk["user_id"].to_numpy()),
            "user_register_days_range": codes["register"].encode(
                chunk["register_days_range"].fillna("").to_numpy()),
            "user_is_video_author": author,
            "user_active_degree": codes["active"].encode(
                chunk["user_active_degree"].fillna("").to_numpy())}
  return convert


def _local_dates(clock: clock_lib.Clock, path: str, chunk: pd.DataFrame) -> np.ndarray:
  """The `date` column as local day numbers."""
  dates = pd.to_datetime(chunk["date"], format="%Y%m%d", errors="coerce")
  if dates.isna().any():
    i = int(np.argmax(dates.isna().to_numpy()))
    raise R.IngestError(path, int(chunk["_line"].iloc[i]), f"date must be yyyymmdd, got "
                        f"{chunk['date'].iloc[i]!r}")
  epoch = np.datetime64(datetime.date(1970, 1, 1), "D")
  return cast(np.ndarray, (dates.to_numpy().astype("datetime64[D]") - epoch).astype(np.int64))


def _read_log(path: str, file_index: int, policy: int, report: R.RowReport, chunk_rows: int,
              codes: Dict[str, R.Codes], n_videos: int,
              impressions: SP.ImpressionSpool) -> None:
  """Streams one log file's rows of known videos into the spool. A request is one (user,
  date, hourmin, policy): the pair (user, that key) ranks it."""
  clock = impressions.clock
  for chunk in R.read_csv_chunks(path, LOG_COLUMNS, dtype=str, chunk_rows=chunk_rows):
    report.add_read("log", len(chunk))
    lines = chunk["_line"].to_numpy()
    click = R.check_labels(path, lines, chunk["is_click"].to_numpy(), "is_click")
    flags = {name: R.check_labels(path, lines, chunk[name].to_numpy(), name)
             for name in ("is_like", "is_follow", "long_view", "is_profile_enter")}
    profile = _numbers(path, chunk, "profile_stay_time")
    date = _numbers(path, chunk, "date")
    timestamps = _numbers(path, chunk, "time_ms") // 1000
    out = {S.USER_ID: codes[S.USER_ID].encode(chunk["user_id"].to_numpy()),
           S.ITEM_ID: codes[S.ITEM_ID].lookup(chunk["video_id"].to_numpy()),
           S.TIMESTAMP: timestamps,
           SP.REQUEST_B: (date * 10_000 + _numbers(path, chunk, "hourmin")) * 2 + policy,
           S.CLICK: click, S.CONVERSION: flags["long_view"] * click,
           "dwell_seconds": declaration.check_numbers(
               path, lines, _numbers(path, chunk, "play_time_ms") * click / 1000.0,
               "play_time_ms").astype(np.float32),
           "read_comments": (_numbers(path, chunk, "comment_stay_time") > 0) * click,
           "entered_profile": ((flags["is_profile_enter"] > 0) | (profile > 0)) * click,
           "followed_author": flags["is_follow"] * click, "liked": flags["is_like"] * click}
    out[SP.REQUEST_A] = out[S.USER_ID]
    out[SP.FILE] = np.full(len(lines), file_index, np.int16)
    out[SP.LINE] = lines
    known = (out[S.ITEM_ID] >= 0) & (out[S.ITEM_ID] < n_videos)
    report.drop("log", "video_id not in video_features", int((~known).sum()))
    report.keep("log", int(known.sum()))
    clock.observe(int(timestamps[0]))
    mismatch = known & (_local_dates(clock, path, chunk) != clock.local_day(timestamps))
    report.adjust("log", DATE_MISMATCH, int(mismatch.sum()))
    impressions.add_rows({k: np.asarray(v)[known] for k, v in out.items()})


def read_kuairand(input_dir: str, spool_dir: str, chunk_rows: int = R.CHUNK_ROWS,
                  kuairand_random: str = "exclude", **_: Any) -> Tuple[W.LogTables, R.RowReport]:
  if kuairand_random not in RANDOM_POLICIES:
    raise R.IngestError(input_dir, None, f"--kuairand_random={kuairand_random}: expected one "
                        f"of {list(RANDOM_POLICIES)}")
  report = R.RowReport()
  codes = {k: R.Codes() for k in (S.USER_ID, S.ITEM_ID, "tag", "author", "music", "register",
                                   "active")}
  videos = _table(_files(input_dir, "video_features_basic*.csv",
                         "KuaiRand's video_features_basic*.csv"), VIDEO_COLUMNS,
                  "video_features", report, chunk_rows, _videos(codes))
  users = _table(_files(input_dir, "user_features*.csv", "KuaiRand's user_features*.csv"),
                 USER_COLUMNS, "user_features", report, chunk_rows, _users(codes))
  standard = _files(input_dir, STANDARD, "KuaiRand's log_standard_*.csv",
                    required=kuairand_random != "only")
  random = _files(input_dir, RANDOM, "KuaiRand's log_random_*.csv",
                  required=kuairand_random == "only")
  logs = [] if kuairand_random == "only" else [(path, 0) for path in standard]
  if kuairand_random == "exclude":
    for path in random:  # counted, not read: another exposure policy
      with open(path, "rb") as f:
        n = max(sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 22), b"")) - 1, 0)
      report.add_read("log_random", n)
      report.drop("log_random", "random exposure (--kuairand_random=exclude)", n)
  else:
    logs += [(path, 1) for path in random]
  if not logs:
    raise R.IngestError(os.path.join(input_dir, STANDARD), None, "missing file: expected "
                        "KuaiRand's log files")
  impressions = SP.ImpressionSpool(os.path.join(spool_dir, "impressions"), SP.UNIX_DAYS,
                                   clock_lib.Clock(TIMEZONE))
  inputs = []
  for file_index, (path, policy) in enumerate(logs):
    inputs.append(W.InputFile(path, "log"))
    _read_log(path, file_index, policy, report, chunk_rows, codes, len(codes[S.ITEM_ID]),
              impressions)
  facts = {"source": "kuairand", "random_exposures": kuairand_random, "approximations": [
      "a request is one (user, date, hourmin): hourmin is hourly in the released logs, so a "
      "request is a user-hour of the feed",
      "days are Beijing days (Asia/Shanghai) of time_ms",
      "conversion = long_view on a clicked video",
      "post-click: play_time_ms/1000 -> dwell_seconds, comment_stay_time>0 -> read_comments, "
      "is_profile_enter or profile_stay_time>0 -> entered_profile, is_follow -> "
      "followed_author, is_like -> liked (clicked rows only)",
      "first tag -> item_category, author_id -> item_shop, music_id -> item_music; no price"]}
  return W.LogTables(impressions, users, videos, inputs, facts=facts,
                     features=list(FEATURES)), report
