"""A source's feature declarations, and how each turns raw values into the world's values.

Every feature of an ingested world beyond the core (`data.world.declared`) is declared: by the user
(a contract's `schema.json`, a RecBole mapping's `features`) or by an adapter for its dataset.
A declaration names the feature, its kind, its availability (from the file it is on: user and
item features serve, impression features are privileged) and how raw values map to the world:

  categorical
    "vocabulary": "integer" (the values are ids already; the default), "dense" (ids 0, 1, ...
        in order of first appearance), a list of raw values (id = position), or
        {"hash": N} (a stable hash of the raw value, N buckets);
    "buckets": [b1, b2, ...] (a number, bucketed: id k for b_k <= value < b_(k+1), 0 below
        b1; the vocabulary is len + 1);
    "cap": C (integer ids above C become C; the vocabulary is C + 1);
    "missing": V (the raw value an empty field stands for, counted; without it an empty
        field stops the ingest at its line);
    "size": N (the vocabulary; an id at or above N is out of vocabulary, stored as N and
        counted). Without "size", the vocabulary is the list's or hash's size, or what the
        data holds (the largest id + 1).
  numeric
    "buckets": the boundaries the models bucket the value at (default: the project slot's,
        else data.world.declared.DEFAULT_NUMERIC_BUCKETS); "cap": values above it become it.
    Values must be finite numbers >= 0 (as a world's are); a negative one, or one too large
    for float32, stops the ingest at its line.

`parse` checks a declaration and names the entry at fault; `Encoder.encode` converts a chunk,
naming the file and line of a bad value.
"""

import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Tuple, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from data.ingest import report as R
from data.world import declared as D
from data.world import schema as S
from data.world.config import WorldConfig

ENTITY_OF_TABLE = {"users": S.USER, "items": S.ITEM, "impressions": S.PAIR}
KEYS = ("name", "slot", "kind", "availability", "vocabulary", "buckets", "cap", "size",
        "missing", "description")
_PROJECT = S.build_schema(WorldConfig())
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """One declared feature: what the world's schema gets, and how raw values are encoded."""
  name: str
  kind: str
  entity: str
  availability: str
  vocabulary: Any = "integer"  # categorical: "integer", "dense", a list, or {"hash": N}
  buckets: Tuple[float, ...] = ()  # categorical: value buckets; numeric: model buckets
  cap: Optional[float] = None
  size: Optional[int] = None
  missing: Optional[str] = None  # the raw value an empty field stands for (None: refused)
  description: str = ""

  def feature(self, vocab_size: int = 0) -> S.Feature:
    """The world's schema entry (categorical: with its final vocabulary size)."""
    source = S.EVENT if self.entity == S.PAIR else S.PROFILE
    if self.kind == S.NUMERIC:
      return S.Feature(self.name, S.NUMERIC, self.entity, self.availability, source,
                       buckets=self.model_buckets(), description=self.description)
    return S.Feature(self.name, S.CATEGORICAL, self.entity, self.availability, source,
                     vocab_size=vocab_size, description=self.description)

  def model_buckets(self) -> Tuple[float, ...]:
    if self.buckets:
      return tuple(float(b) for b in self.buckets)
    if self.name in _PROJECT.names and _PROJECT[self.name].kind == S.NUMERIC:
      return _PROJECT[self.name].buckets
    return D.DEFAULT_NUMERIC_BUCKETS

  def declared_size(self) -> Optional[int]:
    """The vocabulary the declaration fixes (None: the data's)."""
    if self.kind != S.CATEGORICAL:
      return None
    if self.size is not None:
      return int(self.size)
    if self.buckets:
      return len(self.buckets) + 1
    if self.cap is not None:
      return int(self.cap) + 1
    if isinstance(self.vocabulary, list):
      return len(self.vocabulary)
    if isinstance(self.vocabulary, dict):
      return int(self.vocabulary["hash"])
    return None

  def to_json(self) -> Dict[str, Any]:
    out = {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, (), "")}
    if self.kind == S.NUMERIC:
      out.pop("vocabulary", None)
    return out


def project_feature(name: str) -> Optional[S.Feature]:
  """The project schema's feature of that name (a slot), if any."""
  return _PROJECT[name] if isinstance(name, str) and name in _PROJECT.names else None


def parse(path: str, where: str, entry: Dict[str, Any], table: str) -> FeatureSpec:
  """A checked FeatureSpec from a user's declaration `entry` of a feature of `table` (users,
  items or impressions); errors name `path` and `where` (e.g. "columns[7] ('age')")."""
  def fail(message: str) -> R.IngestError:
    return R.IngestError(path, None, f"{where}: {message}")
  unknown = sorted(set(entry) - set(KEYS) - {"file", "column", "role", "field"})
  if unknown:
    raise fail(f"unknown key(s) {unknown}; a feature declares {list(KEYS)}")
  name = entry.get("name", entry.get("slot"))
  if not isinstance(name, str):
    raise fail("expected \"name\": the feature's name in the world")
  entity = ENTITY_OF_TABLE[table]
  project = _PROJECT[name] if name in _PROJECT.names else None
  kind = entry.get("kind", project.kind if project else S.CATEGORICAL)
  default_availability = S.SERVING if entity != S.PAIR else None
  availability = entry.get("availability",
                           project.availability if project else default_availability)
  if project is not None:
    if project.source == S.ID or name in D.CORE and name not in ("item_category", "item_shop"):
      raise fail(f"{name!r} is derived by the ingest, not declared")
    if project.entity != entity:
      raise fail(f"{name!r} is a {project.entity} feature of the project schema; declare it on "
                 f"the {next(t for t, e in ENTITY_OF_TABLE.items() if e == project.entity)} "
                 "file, or give this feature another name")
    if availability != project.availability:
      raise fail(f"availability {availability!r} does not match slot {name} "
                 f"({project.availability}): the project's {name} is {project.availability}; "
                 "give the feature another name to declare another availability")
    if kind != project.kind:
      raise fail(f"kind {kind!r} does not match slot {name} ({project.kind})")
  spec = FeatureSpec(name=name, kind=kind, entity=entity, availability=str(availability),
                     vocabulary=entry.get("vocabulary", "integer"),
                     buckets=tuple(entry.get("buckets", ())), cap=entry.get("cap"),
                     size=entry.get("size"),
                     missing=None if entry.get("missing") is None else str(entry["missing"]),
                     description=str(entry.get("description", "")))
  problems = spec_problems(spec)
  if problems:
    raise fail("; ".join(problems))
  return spec


def spec_problems(spec: FeatureSpec) -> List[str]:
  """What is wrong with a declaration (names, kinds, availabilities and its transforms)."""
  probe = spec.feature(vocab_size=max(spec.declared_size() or 1, 1))
  out = D.feature_problems(probe)
  if spec.kind == S.CATEGORICAL:
    vocabulary = spec.vocabulary
    valid = (vocabulary in ("integer", "dense") if isinstance(vocabulary, str) else
             isinstance(vocabulary, list) and len(vocabulary) > 0 or
             isinstance(vocabulary, dict) and set(vocabulary) == {"hash"}
             and isinstance(vocabulary["hash"], int) and vocabulary["hash"] >= 1)
    if not valid:
      out.append(f"vocabulary {vocabulary!r}: expected \"integer\", \"dense\", a non-empty list "
                 "of values or {\"hash\": N}")
    if spec.size is not None and (not isinstance(spec.size, int) or spec.size < 1):
      out.append(f"size {spec.size!r}: expected a vocabulary size >= 1")
    if spec.cap is not None and (not isinstance(spec.cap, int) or spec.cap < 0):
      out.append(f"cap {spec.cap!r}: expected the largest id kept, an integer >= 0")
  elif spec.cap is not None and not (isinstance(spec.cap, (int, float)) and spec.cap >= 0):
    out.append(f"cap {spec.cap!r}: expected a number >= 0")
  if spec.buckets and not _increasing(spec.buckets):
    out.append(f"buckets {list(spec.buckets)}: expected increasing finite numbers")
  return out


def _increasing(values: Iterable[Any]) -> bool:
  try:
    numbers = [float(v) for v in values]
  except (TypeError, ValueError):
    return False
  return all(np.isfinite(numbers)) and all(a < b for a, b in zip(numbers, numbers[1:]))


class Encoder:
  """Converts one declared feature's raw values, chunk by chunk (dense codes persist across
  chunks and files)."""

  def __init__(self, spec: FeatureSpec, path: str):
    self.spec, self.path = spec, path
    self.codes = R.Codes()
    if isinstance(spec.vocabulary, list) and spec.kind == S.CATEGORICAL:
      self.codes.encode([str(v) for v in spec.vocabulary])
    self.out_of_vocabulary = 0  # list values not in the list
    self.capped = 0
    self.missing = 0  # empty values replaced by the declared "missing" value

  def encode(self, lines: np.ndarray, values: npt.ArrayLike, column: str) -> np.ndarray:
    """int64 ids or float32 values of a chunk; raises IngestError at a bad value's line."""
    spec = self.spec
    values = np.asarray(values, object)
    missing = pd.isna(values) | (values == "")
    if missing.any() and spec.missing is not None:
      self.missing += int(missing.sum())
      values = np.where(missing, spec.missing, values)
    elif missing.any():
      raise R.IngestError(self.path, int(lines[int(np.argmax(missing))]),
                          f"{column}: expected a value")
    if spec.kind == S.NUMERIC:
      numbers = check_numbers(self.path, lines, values, column)
      if spec.cap is not None:
        over = numbers > spec.cap
        self.capped += int(over.sum())
        numbers = np.where(over, spec.cap, numbers)
      return numbers.astype(np.float32)
    if spec.buckets:
      numbers = check_numbers(self.path, lines, values, column, non_negative=False)
      return np.searchsorted(np.asarray(spec.buckets, np.float64), numbers,
                             side="right").astype(np.int64)
    vocabulary = spec.vocabulary
    if isinstance(vocabulary, dict):
      hashed = pd.util.hash_array(np.asarray([str(v) for v in values], object))
      return cast(np.ndarray, (hashed % np.uint64(vocabulary["hash"])).astype(np.int64))
    if vocabulary == "dense":
      return self.codes.encode(values)
    if isinstance(vocabulary, list):
      codes = self.codes.lookup(values)
      unknown = codes < 0
      self.out_of_vocabulary += int(unknown.sum())
      return np.where(unknown, len(vocabulary), codes)
    ids = R.check_integers(self.path, lines, values, column)
    if (ids < 0).any():
      i = int(np.argmax(ids < 0))
      raise R.IngestError(self.path, int(lines[i]), f"{column}: expected an id >= 0, got "
                          f"{ids[i]}")
    if spec.cap is not None:
      over = ids > spec.cap
      self.capped += int(over.sum())
      ids = np.minimum(ids, int(spec.cap))
    return ids


def encoder_facts(encoders: Dict[str, "Encoder"]) -> Dict[str, Dict[str, int]]:
  """What the encoders changed, by feature, for the manifest: values not in a declared list
  (out of vocabulary), capped values, empty values given the declared "missing" value."""
  return {"out_of_vocabulary_values": {n: e.out_of_vocabulary for n, e in encoders.items()
                                       if e.out_of_vocabulary},
          "capped_values": {n: e.capped for n, e in encoders.items() if e.capped},
          "missing_values": {n: e.missing for n, e in encoders.items() if e.missing}}


def check_numbers(path: str, lines: np.ndarray, values: npt.ArrayLike, column: str,
                  non_negative: bool = True) -> np.ndarray:
  """float64 values; raises naming the first line that is not a finite number (one that
  float32 holds), or, with `non_negative`, is below 0."""
  numbers = pd.to_numeric(pd.Series(np.asarray(values, object)),
                          errors="coerce").to_numpy(np.float64)
  with np.errstate(invalid="ignore"):
    bad = ~np.isfinite(numbers) | (np.abs(numbers) > _FLOAT32_MAX)
    negative = numbers < 0 if non_negative else np.zeros(len(numbers), bool)
  first = np.flatnonzero(bad | negative)
  if len(first):
    i = int(first[0])
    shown = np.asarray(values, object)[i]
    if bad[i]:
      raise R.IngestError(path, int(lines[i]), f"{column}: expected a finite number (at most "
                          f"{_FLOAT32_MAX:.3g}), got {shown!r}")
    raise R.IngestError(path, int(lines[i]), f"{column}: expected a number >= 0, got {shown!r}")
  return cast(np.ndarray, numbers)
