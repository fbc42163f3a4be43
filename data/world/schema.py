"""The one feature schema: every feature declared once, with who may read it.

Availability is the project's central concept. Each feature says whether it exists online
for every stage (`serving`), is a user x item cross feature that only the fine ranker can
afford online (`privileged_cross`), or exists only after the click (`privileged_post_click`).
Input building, export and the leak audit all read `features_for(stage, role)`; nothing else
decides what a model may see.

Position is logged with every impression but is not a feature of any stage: it is unknown
when a page is being ranked. Stages train without it (the logging policy's position bias
stays in the labels as noise); the replay applies position effects only through the oracle.
"""

import dataclasses
import json
from typing import Any, Collection, Dict, FrozenSet, List, Sequence, Tuple

from data.world.config import WorldConfig

# Availability.
SERVING = "serving"
PRIVILEGED_CROSS = "privileged_cross"
PRIVILEGED_POST_CLICK = "privileged_post_click"

# Kinds.
CATEGORICAL = "categorical"  # int64 id in [0, vocab_size); ids >= vocab_size are out-of-vocabulary
NUMERIC = "numeric"          # float32, bucketised at `buckets` boundaries
SEQUENCE = "sequence"        # int64[length] ids, most recent first, padded with PAD_ID

# Entities: which side of a two-tower model a feature belongs to.
USER, ITEM, CONTEXT, PAIR = "user", "item", "context", "pair"

# Sources: where a feature's value comes from, and so which world file stores it.
ID = "id"                # the user's or item's id: the key of its entity table
PROFILE = "profile"      # a fixed attribute of the user or item: users.parquet, items.parquet
BEHAVIOUR = "behaviour"  # the user's clicks before the request: once per request, requests/
EVENT = "event"          # a property of the request or impression: on every impression, logs/

PAD_ID = -1
UNLABELLED = -1  # the label of a row nobody labelled (a candidate that was never shown)

# Stages and roles.
STAGES = ("retrieval", "coarse", "fine_ctr", "fine_cvr")
STUDENT, TEACHER = "student", "teacher"

# What each stage may read online (its students and serving exports) ...
_SERVING_AVAILABILITY: Dict[str, FrozenSet[str]] = {
    "retrieval": frozenset({SERVING}),
    "coarse": frozenset({SERVING}),
    "fine_ctr": frozenset({SERVING, PRIVILEGED_CROSS}),
    "fine_cvr": frozenset({SERVING, PRIVILEGED_CROSS}),
}
# ... and what its teacher may read on top (the stage's privileged features).
_PRIVILEGED_AVAILABILITY: Dict[str, FrozenSet[str]] = {
    "retrieval": frozenset(),
    "coarse": frozenset({PRIVILEGED_CROSS}),
    "fine_ctr": frozenset(),
    "fine_cvr": frozenset({PRIVILEGED_POST_CLICK}),
}

# Log columns that are not model features.
REQUEST_ID, DAY, TIMESTAMP, POSITION = "request_id", "day", "timestamp", "position"
USER_ID, ITEM_ID = "user_id", "item_id"
CLICK, CONVERSION, GMV = "click", "conversion", "gmv"
LABELS = (CLICK, CONVERSION, GMV)

COUNT_BUCKETS = (1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0)
PRICE_BUCKETS = tuple(float(round(2.0 ** (k / 2.0), 2)) for k in range(0, 28))  # 1 .. ~11k
DWELL_BUCKETS = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)


@dataclasses.dataclass(frozen=True)
class Feature:
  """One model input column.

  Attributes:
    name: column name in the logs and the key in every model's input dict.
    kind: CATEGORICAL, NUMERIC or SEQUENCE.
    entity: USER, ITEM, CONTEXT or PAIR (user x item).
    availability: SERVING, PRIVILEGED_CROSS or PRIVILEGED_POST_CLICK.
    source: ID, PROFILE, BEHAVIOUR or EVENT (where the value comes from and is stored).
    vocab_size: for categorical and sequence features, ids lie in [0, vocab_size).
    buckets: for numeric features, the bucket boundaries.
    length: for sequence features, the fixed length.
    description: what the column means, for people.
  """
  name: str
  kind: str
  entity: str
  availability: str
  source: str
  vocab_size: int = 0
  buckets: Tuple[float, ...] = ()
  length: int = 0
  description: str = ""

  @property
  def dtype(self) -> str:
    return "float32" if self.kind == NUMERIC else "int64"


@dataclasses.dataclass(frozen=True)
class Schema:
  """The ordered feature declarations of one world."""
  features: Tuple[Feature, ...]

  def __post_init__(self) -> None:
    names = [f.name for f in self.features]
    if len(names) != len(set(names)):
      raise ValueError(f"duplicate feature names in schema: {names}")

  def __getitem__(self, name: str) -> Feature:
    for feature in self.features:
      if feature.name == name:
        return feature
    raise KeyError(f"no feature {name!r} in the schema")

  @property
  def names(self) -> List[str]:
    return [f.name for f in self.features]

  def names_of(self, entity: str, source: str) -> Tuple[str, ...]:
    """Names of the features of `entity` (USER, ...) from `source` (PROFILE, ...), in order."""
    return tuple(f.name for f in self.features if f.entity == entity and f.source == source)

  def with_availability(self, availabilities: Collection[str]) -> List[Feature]:
    return [f for f in self.features if f.availability in availabilities]

  def serving_features(self, stage: str) -> List[Feature]:
    """Features a stage may read online: its student's inputs and its export signature."""
    return self.with_availability(_stage(_SERVING_AVAILABILITY, stage))

  def privileged_features(self, stage: str) -> List[Feature]:
    """Features only a stage's teacher may read (X*)."""
    return self.with_availability(_stage(_PRIVILEGED_AVAILABILITY, stage))

  def features_for(self, stage: str, role: str) -> List[Feature]:
    """Every feature `role` (STUDENT or TEACHER) may read at `stage`."""
    if role == STUDENT:
      return self.serving_features(stage)
    if role == TEACHER:
      allowed = _stage(_SERVING_AVAILABILITY, stage) | _stage(_PRIVILEGED_AVAILABILITY, stage)
      return self.with_availability(allowed)
    raise ValueError(f"unknown role {role!r}; expected {STUDENT!r} or {TEACHER!r}")

  def check_serving(self, stage: str, names: Sequence[str]) -> None:
    """Raises ValueError if any of `names` may not be read online at `stage`."""
    allowed = {f.name for f in self.serving_features(stage)}
    forbidden = [n for n in names if n not in allowed]
    if forbidden:
      detail = ", ".join(
          f"{n} ({self[n].availability})" if n in self.names else f"{n} (not in schema)"
          for n in forbidden)
      raise ValueError(f"stage {stage!r} may not read at serving time: {detail}")

  def to_json(self) -> List[Dict[str, Any]]:
    return [dataclasses.asdict(f) for f in self.features]

  @classmethod
  def from_json(cls, rows: List[Dict[str, Any]]) -> "Schema":
    """The schema of a manifest; one written before features had a source gets the declared
    source of each feature."""
    return cls(tuple(Feature(**{"source": _declared_source(r["name"]), **r,
                                "buckets": tuple(r.get("buckets", ()))}) for r in rows))

  def dumps(self) -> str:
    return json.dumps(self.to_json(), indent=1)


def _declared_source(name: str) -> str:
  return _DECLARED[name].source if name in _DECLARED.names else EVENT


def _stage(table: Dict[str, FrozenSet[str]], stage: str) -> FrozenSet[str]:
  if stage not in table:
    raise ValueError(f"unknown stage {stage!r}; expected one of {list(STAGES)}")
  return table[stage]


def build_schema(config: WorldConfig) -> Schema:
  """Declares every feature of a world built from `config`."""
  c = config
  cat = CATEGORICAL
  feats = [
      # User profile (serving).
      Feature(USER_ID, cat, USER, SERVING, ID, vocab_size=c.n_users, description="user id"),
      Feature("user_age_bucket", cat, USER, SERVING, PROFILE, vocab_size=7,
              description="age bucket"),
      Feature("user_gender", cat, USER, SERVING, PROFILE, vocab_size=2, description="gender"),
      Feature("user_power_level", cat, USER, SERVING, PROFILE, vocab_size=5,
              description="purchasing-power level, 0 (low) .. 4 (high)"),
      # Behaviour sequence as of the request time (serving, user side).
      Feature("hist_item_ids", SEQUENCE, USER, SERVING, BEHAVIOUR, vocab_size=c.n_items,
              length=c.history_len, description="last clicked item ids, most recent first"),
      Feature("hist_category_ids", SEQUENCE, USER, SERVING, BEHAVIOUR,
              vocab_size=c.n_categories, length=c.history_len,
              description="categories of the last clicked items"),
      Feature("hist_shop_ids", SEQUENCE, USER, SERVING, BEHAVIOUR, vocab_size=c.n_shops,
              length=c.history_len, description="shops of the last clicked items"),
      Feature("hist_len", NUMERIC, USER, SERVING, BEHAVIOUR, buckets=COUNT_BUCKETS,
              description="number of valid entries in the behaviour sequence"),
      # Request context (serving).
      Feature("context_hour", cat, CONTEXT, SERVING, EVENT, vocab_size=24,
              description="hour of day of the request"),
      # Item profile (serving).
      Feature(ITEM_ID, cat, ITEM, SERVING, ID, vocab_size=c.n_items, description="item id"),
      Feature("item_category", cat, ITEM, SERVING, PROFILE, vocab_size=c.n_categories,
              description="item category"),
      Feature("item_shop", cat, ITEM, SERVING, PROFILE, vocab_size=c.n_shops,
              description="item shop"),
      Feature("item_brand", cat, ITEM, SERVING, PROFILE, vocab_size=c.n_brands,
              description="item brand"),
      Feature("item_price", NUMERIC, ITEM, SERVING, PROFILE, buckets=PRICE_BUCKETS,
              description="item price"),
      # User x item cross features (privileged at coarse rank, regular at fine rank).
      Feature("cross_clicks_cate_24h", NUMERIC, PAIR, PRIVILEGED_CROSS, EVENT,
              buckets=COUNT_BUCKETS,
              description="user's clicks in this item's category in the 24h before the request"),
      Feature("cross_clicks_shop_24h", NUMERIC, PAIR, PRIVILEGED_CROSS, EVENT,
              buckets=COUNT_BUCKETS,
              description="user's clicks in this item's shop in the 24h before the request"),
      Feature("cross_clicks_brand_24h", NUMERIC, PAIR, PRIVILEGED_CROSS, EVENT,
              buckets=COUNT_BUCKETS,
              description="user's clicks in this item's brand in the 24h before the request"),
      Feature("cross_views_item_7d", NUMERIC, PAIR, PRIVILEGED_CROSS, EVENT,
              buckets=COUNT_BUCKETS,
              description="times this item was shown to the user in the 7 days before"),
      # Post-click signals from the item's detail page (never available at serving).
      Feature("dwell_seconds", NUMERIC, PAIR, PRIVILEGED_POST_CLICK, EVENT,
              buckets=DWELL_BUCKETS, description="seconds on the detail page; 0 without a click"),
      Feature("read_comments", cat, PAIR, PRIVILEGED_POST_CLICK, EVENT, vocab_size=2,
              description="read the comments after the click"),
      Feature("chatted_with_seller", cat, PAIR, PRIVILEGED_POST_CLICK, EVENT, vocab_size=2,
              description="chatted with the seller after the click"),
      Feature("added_to_cart", cat, PAIR, PRIVILEGED_POST_CLICK, EVENT, vocab_size=2,
              description="added the item to the cart after the click"),
      Feature("favorited", cat, PAIR, PRIVILEGED_POST_CLICK, EVENT, vocab_size=2,
              description="favourited the item after the click"),
  ]
  return Schema(tuple(feats))


# Column groups, derived from the declarations above. Names, entities and sources do not
# depend on a world's sizes, so the default configuration's schema gives them for every world.
_DECLARED = build_schema(WorldConfig())
DECLARED = _DECLARED  # the code's declaration, at the default sizes (what stages may accept)
USER_PROFILE = _DECLARED.names_of(USER, PROFILE)   # user_age_bucket, user_gender, ...
ITEM_PROFILE = _DECLARED.names_of(ITEM, PROFILE)   # item_category, item_shop, ...
BEHAVIOUR_FEATURES = _DECLARED.names_of(USER, BEHAVIOUR)  # hist_* and hist_len
CONTEXT_FEATURES = _DECLARED.names_of(CONTEXT, EVENT)     # context_hour
