"""A source's time: its timezone, its local days, and the world's clock.

Every source declares the timezone its days are cut in (a contract's or a RecBole mapping's
`"timezone"`; the adapters know their dataset's: KuaiRand and the Taobao ad logs are Beijing
time). Timestamps stay what they are, seconds since the epoch, so the order of events is never
changed; only the cut between days moves. Day 1 starts at the local midnight before the first
request, and the world's clock counts seconds from there: a timestamp t is at world time
t - origin, in world day (t - origin) // 86400 + 1, at local hour ((t - origin) % 86400) // 3600.

The cut uses one offset from UTC for the whole source: the zone's offset at the first timestamp
read. In a zone without daylight saving (Beijing, UTC) that is its local day exactly; where the
offset changes in the log, the days after the change are cut an hour off local midnight. The
clock itself never moves, so a point-in-time feature, which counts only events strictly
before its request's time, can never see an event that happened after it, whatever the zone.
"""

import dataclasses
import datetime
import re
from typing import Any, Dict, Optional, Union, overload
import zoneinfo

import numpy as np

from data.world.config import SECONDS_PER_DAY

UTC = "UTC"
_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{1,2}):?(\d{2})?$")


def utc_offset(timezone: str, timestamp: int) -> int:
  """Seconds east of UTC of `timezone` (an IANA name such as "Asia/Shanghai", "UTC", or a
  fixed offset such as "+08:00") at unix time `timestamp`. Raises ValueError for an unknown
  zone."""
  match = _OFFSET.match(timezone.strip())
  if match:
    sign, hours, minutes = match.groups()
    seconds = int(hours) * 3600 + int(minutes or 0) * 60
    if seconds > 14 * 3600:
      raise ValueError(f"timezone {timezone!r}: an offset is at most 14 hours")
    return seconds if sign == "+" else -seconds
  try:
    zone = zoneinfo.ZoneInfo(timezone)
  except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ValueError(f"timezone {timezone!r}: expected an IANA name (e.g. \"UTC\", "
                     "\"Asia/Shanghai\", \"America/Chicago\") or an offset like \"+08:00\"")
  moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.timezone.utc)
  offset = moment.astimezone(zone).utcoffset()
  return int(offset.total_seconds()) if offset is not None else 0


@dataclasses.dataclass
class Clock:
  """Local days of one source: `offset` is fixed by the first timestamp `observe` sees."""
  timezone: str = UTC
  offset: Optional[int] = None

  def __post_init__(self) -> None:
    utc_offset(self.timezone, 0)  # an unknown zone fails here, before anything is read

  def observe(self, timestamp: int) -> None:
    if self.offset is None:
      self.offset = utc_offset(self.timezone, int(timestamp))

  @overload
  def local_day(self, timestamps: int) -> int: ...

  @overload
  def local_day(self, timestamps: np.ndarray) -> np.ndarray: ...

  def local_day(self, timestamps: Union[int, np.ndarray]) -> Union[int, np.ndarray]:
    """Local day numbers (days since 1970-01-01 in this zone) of unix timestamps."""
    return (timestamps + (self.offset or 0)) // SECONDS_PER_DAY

  def day_start(self, local_day: int) -> int:
    """Unix time of the local midnight that starts `local_day`."""
    return int(local_day) * SECONDS_PER_DAY - (self.offset or 0)

  def facts(self) -> Dict[str, Any]:
    return {"timezone": self.timezone, "utc_offset_seconds": int(self.offset or 0)}


def date_of(local_day: int) -> str:
  """The calendar date of a local day number."""
  return (datetime.date(1970, 1, 1) + datetime.timedelta(days=int(local_day))).isoformat()
