"""A world's own schema: the features a world from real logs declares, and the rules they obey.

The simulator's world has the code's schema (`data.world.schema.build_schema`): `data.load` compares
the manifest with it, so an edited manifest is refused. A world ingested from real logs
(`data.ingest`) declares its own features instead: the user's and the item's profile columns
and the impression signals its source has, each with a kind, a vocabulary size (or buckets)
and an availability. The manifest says so (`schema_declared: true`), and the schema is then
part of the world's hash (`data.world.io.world_hash`), so an edited schema is refused the same way
(a changed hash) without the code having to know the source's features.

Whatever a world declares, it has the core the funnel is built on, exactly as the code
declares it for the world's config: the ids, the item's category and shop (the vocabularies of
the behaviour sequence), the request's hour and the behaviour sequence itself. `problems`
checks that, and the rules every declared feature follows:

  - a name of lower-case letters, digits and `_`, not a log column (request_id, day, ...);
  - user and item profile features are `serving` (the funnel knows them for every candidate);
  - impression (pair) features are `privileged_cross` or `privileged_post_click`: a serving
    feature of one impression could not be known for the candidates the funnel scores;
  - categorical: a vocabulary of at least one id (ids at or above it are the out-of-vocabulary
    id, `vocab_size` itself, which every model embeds in its own row); numeric: increasing,
    finite bucket boundaries.
"""

import dataclasses
import math
import re
from typing import Dict, List, Sequence

from data.world import schema as S
from data.world.config import WorldConfig

# Manifest key: true when the world declares its own schema (hashed with the world).
SCHEMA_DECLARED = "schema_declared"
# Every world has these, as the code declares them for its config.
CORE = (S.USER_ID, S.ITEM_ID, "item_category", "item_shop", "context_hour", "hist_item_ids",
        "hist_category_ids", "hist_shop_ids", "hist_len")
# Cross features every world can derive from its own logs, point in time; the brand counter
# only when the items declare a brand. Value: the item profile feature the counter keys on.
DERIVED_CROSS = {"cross_clicks_cate_24h": "item_category", "cross_clicks_shop_24h": "item_shop",
                 "cross_clicks_brand_24h": "item_brand", "cross_views_item_7d": S.ITEM_ID}
RESERVED = (S.REQUEST_ID, S.DAY, S.TIMESTAMP, S.POSITION) + S.LABELS
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Buckets of a numeric feature that declares none: powers of two from 1/4 to about 10^6.
DEFAULT_NUMERIC_BUCKETS = tuple(2.0 ** k for k in range(-2, 21))
_AVAILABILITY_OF_ENTITY = {S.USER: (S.SERVING,), S.ITEM: (S.SERVING,),
                           S.PAIR: (S.PRIVILEGED_CROSS, S.PRIVILEGED_POST_CLICK)}


def core_features(config: WorldConfig) -> Dict[str, S.Feature]:
  """The core features of a world of `config`, as the code declares them."""
  code = S.build_schema(config)
  return {name: code[name] for name in CORE}


def derived_cross(config: WorldConfig, item_names: Sequence[str]) -> List[S.Feature]:
  """The derived cross features a world whose items have `item_names` gets."""
  code = S.build_schema(config)
  return [code[name] for name, key in DERIVED_CROSS.items()
          if key in item_names or key in CORE]


def assemble(config: WorldConfig, user: Sequence[S.Feature], item: Sequence[S.Feature],
             pair: Sequence[S.Feature]) -> S.Schema:
  """The schema of an ingested world: the core, the declared profile features, the derived
  cross features the source does not supply, then the declared impression features.

  `item` may redeclare item_category and item_shop (their vocabulary is then the world's,
  which `config` must agree with); other core names may not be declared.
  """
  core = core_features(config)
  declared_item = {f.name: f for f in item}
  item_core = [declared_item.pop(n, core[n]) for n in ("item_category", "item_shop")]
  pair_names = {f.name for f in pair}
  derived = [f for f in derived_cross(config, [f.name for f in item])
             if f.name not in pair_names]
  features = ([core[S.USER_ID]] + list(user)
              + [core[n] for n in ("hist_item_ids", "hist_category_ids", "hist_shop_ids",
                                   "hist_len", "context_hour", S.ITEM_ID)]
              + item_core + list(declared_item.values()) + derived + list(pair))
  return S.Schema(tuple(features))


def problems(schema: S.Schema, config: WorldConfig) -> List[str]:
  """Every way `schema` breaks the rules of a declared schema (empty when it follows them)."""
  out = []
  core = core_features(config)
  for name, expected in core.items():
    if name not in schema.names:
      out.append(f"schema: core feature {name!r} is missing")
    elif schema[name] != expected and not _same_core(schema[name], expected):
      out.append(f"schema: core feature {name!r} is {_brief(schema[name])}, the code declares "
                 f"{_brief(expected)} for this world's config")
  for feature in schema.features:
    if feature.name in core:
      continue
    out += [f"schema: feature {feature.name!r}: {p}" for p in feature_problems(feature)]
  return out


def _same_core(stored: S.Feature, expected: S.Feature) -> bool:
  """item_category / item_shop may carry the source's description."""
  return dataclasses.replace(stored, description=expected.description) == expected


def _brief(feature: S.Feature) -> str:
  return (f"{feature.kind} {feature.entity} {feature.availability} {feature.source} "
          f"vocab_size={feature.vocab_size} length={feature.length}")


def feature_problems(feature: S.Feature) -> List[str]:
  """What is wrong with one declared (non-core) feature."""
  out = []
  if not NAME.match(feature.name) or feature.name in RESERVED:
    out.append("expected a name of lower-case letters, digits and _ (at most 64), not one of "
               f"{list(RESERVED)}")
  if feature.entity not in _AVAILABILITY_OF_ENTITY:
    out.append(f"entity {feature.entity!r}: expected user, item or pair")
    return out
  allowed = _AVAILABILITY_OF_ENTITY[feature.entity]
  if feature.availability not in allowed:
    out.append(f"availability {feature.availability!r}: a {feature.entity} feature must be "
               f"{' or '.join(allowed)}")
  source = S.EVENT if feature.entity == S.PAIR else S.PROFILE
  if feature.source != source:
    out.append(f"source {feature.source!r}: a {feature.entity} feature's source is {source}")
  if feature.kind == S.CATEGORICAL:
    if feature.vocab_size < 1 or feature.buckets or feature.length:
      out.append("a categorical feature needs vocab_size >= 1 and no buckets or length")
  elif feature.kind == S.NUMERIC:
    buckets = list(feature.buckets)
    if (not buckets or feature.vocab_size or feature.length
        or not all(math.isfinite(b) for b in buckets)
        or any(b >= c for b, c in zip(buckets, buckets[1:]))):
      out.append("a numeric feature needs increasing, finite buckets and no vocab_size")
  else:
    out.append(f"kind {feature.kind!r}: expected categorical or numeric")
  return out
