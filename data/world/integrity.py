"""Checks of a world's content that hashes cannot give: its schema and its value ranges.

The schema decides which columns a serving model may read, so it must come from the code, not
from an editable manifest: `schema_problems` compares the manifest's schema with the one the
code declares for the world's config, and `data.load` refuses a world where they differ. A
world from real logs declares its own schema (`data.world.declared`): it must follow the rules of a
declared schema, and it is hashed with the world, so an edit is refused as a changed hash.

A hash only says a file is the one the manifest lists; a file rewritten together with its
manifest entry (or a world written by another tool) can still hold NaN prices or negative dwell
times, which train and export without complaint and shift every metric. `value_problems` checks
each column of a table against the range its schema declares, naming the file, the column, how
many values are out of range and one example row. The oracle's hidden inputs (truth/*.parquet)
are checked the same way (`TRUTH_RANGES`): a NaN taste would otherwise give empty best pages.
"""

import dataclasses
from typing import Any, Dict, List, Optional, Tuple, Union, cast

import numpy as np
import pyarrow as pa

from data.world import config as config_lib
from data.world import declared
from data.world import schema as schema_lib

# Schema fields that manifests written before they existed lack; Schema.from_json fills them.
FIELDS_ADDED_LATER = frozenset({"source"})
BINARY_LABELS = (schema_lib.CLICK, schema_lib.CONVERSION)


def schema_problems(manifest: Dict[str, Any]) -> List[str]:
  """Differences between the manifest's schema and the code's schema for its config, or, for
  a world that declares its schema, the rules that schema breaks."""
  config = config_lib.WorldConfig.from_dict(manifest["config"])
  if manifest.get(declared.SCHEMA_DECLARED):
    try:
      schema = schema_lib.Schema.from_json(manifest["schema"])
    except (TypeError, ValueError, KeyError) as error:
      return [f"schema: not a list of feature declarations ({error})"]
    return declared.problems(schema, config)
  code = schema_lib.build_schema(config)
  stored = {row["name"]: row for row in manifest["schema"]}
  problems = []
  for feature in code.features:
    row = stored.pop(feature.name, None)
    if row is None:
      problems.append(f"schema: feature {feature.name!r} is missing from the manifest")
      continue
    expected = dataclasses.asdict(feature)
    for key in sorted(expected):
      if key in FIELDS_ADDED_LATER and key not in row:
        continue  # a world generated before the field existed (its bytes are unchanged)
      value = row.get(key)
      value = tuple(value) if isinstance(value, list) else value
      if value != expected[key]:
        problems.append(f"schema: feature {feature.name!r} field {key!r} is {value!r} in the "
                        f"manifest, the code declares {expected[key]!r}")
  problems += [f"schema: feature {name!r} is not declared by the code" for name in stored]
  return problems


# The oracle's inputs (truth/*.parquet, not in the schema): (low, high, description), where
# an id column's high is the vocabulary of the schema feature named instead of a number.
ANY_FINITE = (-np.inf, np.inf, "finite")
TRUTH_RANGES: Dict[str, Tuple[float, Union[float, str], str]] = {
    "user_taste": ANY_FINITE, "item_taste": ANY_FINITE, "item_quality": ANY_FINITE,
    "user_pref_weights": (0.0, 1.0, "a weight in [0, 1]"),
    "category_popularity": (0.0, 1.0, "a share in [0, 1]"),
    "user_price_sensitivity": (0.0, np.inf, "finite and >= 0"),
    "item_popularity": (0.0, np.inf, "finite and >= 0"),
    "user_pref_categories": (0, "item_category", ""), "intent_category": (0, "item_category", ""),
    "intent_shop": (0, "item_shop", ""),
}


def _truth_range(name: str, schema: schema_lib.Schema) -> Optional[Tuple[float, float, str]]:
  low, high, description = TRUTH_RANGES[name]
  if isinstance(high, str):  # an id of the vocabulary of schema feature `high`
    if high not in schema.names:
      return None
    size = schema[high].vocab_size
    return low, size - 1, f"an id in [{low:g}, {size})"
  return low, float(high), description


def _valid_range(name: str, schema: schema_lib.Schema) -> Optional[Tuple[float, float, str]]:
  """(low, high, description) of the values column `name` may hold; None: not checked."""
  if name in TRUTH_RANGES:
    return _truth_range(name, schema)
  if name in BINARY_LABELS:
    return 0, 1, "a 0/1 label"
  if name == schema_lib.GMV:
    return 0, np.inf, "finite and >= 0"
  if name not in schema.names:
    return None
  feature = schema[name]
  if feature.kind == schema_lib.NUMERIC:
    return 0, np.inf, "finite and >= 0"
  if feature.kind == schema_lib.SEQUENCE:  # -1 pads a short history
    return -1, feature.vocab_size - 1, f"an id in [-1, {feature.vocab_size})"
  if feature.source == schema_lib.ID:  # a row of the entity tables
    return 0, feature.vocab_size - 1, f"an id in [0, {feature.vocab_size})"
  # vocab_size itself is the out-of-vocabulary id (a code the source had beyond the vocabulary).
  return 0, feature.vocab_size, (f"an id in [0, {feature.vocab_size}] ({feature.vocab_size}: "
                                 "out of vocabulary)")


def column_problem(path: str, name: str, values: np.ndarray,
                   schema: schema_lib.Schema) -> Optional[str]:
  """One line naming the file, column, count and an example row when values are out of range."""
  valid = _valid_range(name, schema)
  if valid is None:
    return None
  low, high, description = valid
  if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
    return f"{path}: column {name!r} holds {values.dtype} values, expected numbers"
  with np.errstate(invalid="ignore"):
    bad = ~(np.isfinite(values) & (values >= low) & (values <= high))
  if values.ndim > 1:
    bad = bad.any(axis=1)
  count = int(bad.sum())
  if not count:
    return None
  row = int(np.flatnonzero(bad)[0])
  return (f"{path}: column {name!r} has {count} value(s) that are not {description} "
          f"(e.g. row {row}: {values[row].tolist()})")


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
  """A column as numpy (fixed-size lists as 2-D); nulls become NaN, so they are out of range."""
  column = column.combine_chunks()
  if pa.types.is_fixed_size_list(column.type):
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return cast(np.ndarray, flat.reshape(-1, column.type.list_size))
  values = column.to_numpy(zero_copy_only=False)
  return cast(np.ndarray, values.astype(np.float64) if column.null_count else values)


def value_problems(path: str, table: pa.Table, schema: schema_lib.Schema) -> List[str]:
  """Every column of `table` (read from `path`) whose values leave their declared range."""
  problems = []
  for name in table.column_names:
    if _valid_range(name, schema) is None:
      continue
    problem = column_problem(path, name, _numpy(table.column(name)), schema)
    if problem:
      problems.append(problem)
  return problems
