"""`--source=kuairand`: KuaiRand (Kuaishou's video feed logs with random exposures).

Input, comma-separated with headers: one or more `log_*.csv` (user_id, video_id, date, hourmin,
time_ms, is_click, is_like, is_follow, long_view, play_time_ms, profile_stay_time,
comment_stay_time, is_profile_enter, ...), `user_features*.csv` (user_id,
user_active_degree, is_video_author, register_days_range, ...) and `video_features_basic*.csv`
(video_id, author_id, music_id, tag, ...). Extra columns are ignored.

Mapping (docs/real_logs.md): a request is one (user, date, hourmin) minute of the feed; the
video is the item, its first `tag` the category (so the 24h click counter by category is the
user's clicks on the same tag in the 24h before: privileged_cross, derived point in time),
`author_id` the shop, `music_id` the brand; user slots: register_days_range (age bucket),
is_video_author (gender slot), user_active_degree (power level), all dense codes. Labels:
is_click the click, long_view on a click the conversion-like label. privileged_post_click, on
clicked rows only (0 otherwise, as in the simulator): dwell_seconds = play_time_ms / 1000,
read_comments = comment_stay_time > 0, chatted_with_seller = is_profile_enter (or
profile_stay_time > 0), added_to_cart = is_follow, favorited = is_like. Days: the distinct
`date`s in order (1, 2, ...).
"""

import glob
import os
from typing import Dict, List, Tuple

import numpy as np

from data import schema as S
from data.ingest import report as R
from data.ingest import spool as SP
from data.ingest import world_builder as W

LOG_COLUMNS = ["user_id", "video_id", "date", "time_ms", "is_click", "is_like", "is_follow",
               "long_view", "play_time_ms", "profile_stay_time", "comment_stay_time",
               "is_profile_enter", "hourmin"]
USER_COLUMNS = ["user_id", "user_active_degree", "is_video_author", "register_days_range"]
VIDEO_COLUMNS = ["video_id", "author_id", "music_id", "tag"]


def _one(input_dir: str, pattern: str, what: str) -> List[str]:
  paths = sorted(glob.glob(os.path.join(input_dir, pattern)))
  if not paths:
    raise R.IngestError(os.path.join(input_dir, pattern), None, f"missing file: expected {what}")
  return paths


def _numbers(path, chunk, column) -> np.ndarray:
  values = chunk[column].fillna("0").to_numpy()
  return R.check_integers(path, chunk["_line"].to_numpy(), values, column)


def _read_videos(paths, report, chunk_rows, codes) -> Dict[str, np.ndarray]:
  parts: Dict[str, list] = {}
  for path in paths:
    for chunk in R.read_csv_chunks(path, VIDEO_COLUMNS, dtype=str, chunk_rows=chunk_rows):
      report.add_read("video_features", len(chunk))
      first_tag = chunk["tag"].fillna("UNKNOWN").str.split(",").str[0]
      out = {S.ITEM_ID: codes[S.ITEM_ID].encode(chunk["video_id"].to_numpy()),
             "item_category": codes["tag"].encode(first_tag.to_numpy()),
             "item_shop": codes["author"].encode(chunk["author_id"].fillna("").to_numpy()),
             "item_brand": codes["music"].encode(chunk["music_id"].fillna("").to_numpy())}
      for k, v in out.items():
        parts.setdefault(k, []).append(v)
  videos = {k: np.concatenate(v) for k, v in parts.items()}
  report.keep("video_features", len(videos[S.ITEM_ID]))
  return videos


def _read_users(paths, report, chunk_rows, codes) -> Dict[str, np.ndarray]:
  parts: Dict[str, list] = {}
  for path in paths:
    for chunk in R.read_csv_chunks(path, USER_COLUMNS, dtype=str, chunk_rows=chunk_rows):
      report.add_read("user_features", len(chunk))
      out = {S.USER_ID: codes[S.USER_ID].encode(chunk["user_id"].to_numpy()),
             "user_age_bucket": codes["register"].encode(
                 chunk["register_days_range"].fillna("").to_numpy()),
             "user_gender": _numbers(path, chunk, "is_video_author").clip(0, 1),
             "user_power_level": codes["active"].encode(
                 chunk["user_active_degree"].fillna("").to_numpy())}
      for k, v in out.items():
        parts.setdefault(k, []).append(v)
  users = {k: np.concatenate(v) for k, v in parts.items()}
  report.keep("user_features", len(users[S.USER_ID]))
  return users


def _read_log(path, file_index, report, chunk_rows, codes, n_videos,
              impressions: SP.ImpressionSpool) -> None:
  """Streams one log file's rows of known videos into the spool. A request is one (user,
  date, hourmin): the pair (user, date * 10^4 + hourmin) ranks it; the date is its day key."""
  for chunk in R.read_csv_chunks(path, LOG_COLUMNS, dtype=str, chunk_rows=chunk_rows):
    report.add_read("log", len(chunk))
    lines = chunk["_line"].to_numpy()
    click = R.check_labels(path, lines, chunk["is_click"].to_numpy(), "is_click")
    flags = {name: R.check_labels(path, lines, chunk[name].to_numpy(), name)
             for name in ("is_like", "is_follow", "long_view", "is_profile_enter")}
    profile = _numbers(path, chunk, "profile_stay_time")
    date = _numbers(path, chunk, "date")
    out = {S.USER_ID: codes[S.USER_ID].encode(chunk["user_id"].to_numpy()),
           S.ITEM_ID: codes[S.ITEM_ID].lookup(chunk["video_id"].to_numpy()),
           S.TIMESTAMP: _numbers(path, chunk, "time_ms") // 1000,
           S.DAY: date, SP.REQUEST_B: date * 10_000 + _numbers(path, chunk, "hourmin"),
           S.CLICK: click, S.CONVERSION: flags["long_view"] * click,
           "dwell_seconds": (_numbers(path, chunk, "play_time_ms") * click / 1000.0
                             ).astype(np.float32),
           "read_comments": (_numbers(path, chunk, "comment_stay_time") > 0) * click,
           "chatted_with_seller": ((flags["is_profile_enter"] > 0) | (profile > 0)) * click,
           "added_to_cart": flags["is_follow"] * click, "favorited": flags["is_like"] * click}
    out[SP.REQUEST_A] = out[S.USER_ID]
    out[SP.FILE] = np.full(len(lines), file_index, np.int16)
    out[SP.LINE] = lines
    known = (out[S.ITEM_ID] >= 0) & (out[S.ITEM_ID] < n_videos)
    report.drop("log", "video_id not in video_features", int((~known).sum()))
    report.keep("log", int(known.sum()))
    impressions.add_rows({k: np.asarray(v)[known] for k, v in out.items()})


def read_kuairand(input_dir: str, spool_dir: str, chunk_rows: int = R.CHUNK_ROWS
                  ) -> Tuple[W.LogTables, R.RowReport]:
  report = R.RowReport()
  codes = {k: R.Codes() for k in (S.USER_ID, S.ITEM_ID, "tag", "author", "music", "register",
                                   "active")}
  videos = _read_videos(_one(input_dir, "video_features_basic*.csv",
                             "KuaiRand's video_features_basic*.csv"), report, chunk_rows, codes)
  users = _read_users(_one(input_dir, "user_features*.csv", "KuaiRand's user_features*.csv"),
                      report, chunk_rows, codes)
  impressions = SP.ImpressionSpool(os.path.join(spool_dir, "impressions"), SP.RANKED_DAYS)
  inputs = []
  for file_index, path in enumerate(_one(input_dir, "log_*.csv", "KuaiRand's log_*.csv")):
    inputs.append(W.InputFile(path, "log"))
    _read_log(path, file_index, report, chunk_rows, codes, len(codes[S.ITEM_ID]), impressions)
  facts = {"source": "kuairand", "approximations": [
      "a request is one (user, date, hourmin) minute of the feed",
      "conversion = long_view on a clicked video",
      "post-click slots: play_time_ms/1000 -> dwell_seconds, comment_stay_time>0 -> "
      "read_comments, is_profile_enter or profile_stay_time>0 -> chatted_with_seller, "
      "is_follow -> added_to_cart, is_like -> favorited (clicked rows only)",
      "first tag -> item_category, author_id -> item_shop, music_id -> item_brand; no price"]}
  return W.LogTables(impressions, users, videos, inputs, facts=facts), report
