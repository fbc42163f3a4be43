"""What the funnel's models cost, counted from their layers: embedding tables, FLOPs and bytes
per request and per candidate, and their extrapolation to another world's sizes.

`benchmarks.cost_model` builds the stages' models, times them and reports; this module only
counts (no timing), so every count can be checked by hand (tests/test_cost_model.py).
"""

import dataclasses
from typing import Any, Dict, List, Sequence

import tensorflow as tf

from data.world import schema as schema_lib
import models  # noqa: F401 (TF_USE_LEGACY_KERAS before TensorFlow loads)
from models import rankers

FLOAT_BYTES = 4
ADAM_SLOTS = 2  # m and v per row (row-wise Adam keeps both for every row of a table)
MEASURED, EXTRAPOLATED = "measured", "extrapolated"
# Which world size a table's rows follow at scale: ids by their entity, the item attributes
# (category, shop, brand) with the items at the world's items-per-value ratio (an assumption:
# real catalogues have their own counts). Every other table (profile buckets, numeric buckets,
# hours) keeps its rows.
SCALES_WITH = {"user_id": "users", "item_id": "items", "item_category": "items",
               "item_shop": "items", "item_brand": "items"}


@dataclasses.dataclass(frozen=True)
class Table:
  """One embedding table a head reads: its vocabulary group, rows and width."""
  group: str
  rows: int
  dim: int

  @property
  def bytes(self) -> int:
    return self.rows * self.dim * FLOAT_BYTES


def feature_embeddings(head) -> List[models.FeatureEmbedding]:
  """The head's `FeatureEmbedding`s (one for a DNN, user and item side for a two-tower)."""
  return [m for m in head.submodules if isinstance(m, models.FeatureEmbedding)]


def embedding_tables(*heads) -> List[Table]:
  """Every table the heads read, counted once (a table shared by two heads is one variable)."""
  tables: Dict[int, Table] = {}
  for head in heads:
    for embedding in feature_embeddings(head):
      for feature in embedding.features:
        variable = embedding.table(feature)
        rows, dim = (int(n) for n in variable.shape)
        tables.setdefault(id(variable), Table(models.vocabulary_group(feature), rows, dim))
  return list(tables.values())


def dense_flops(layer) -> int:
  """2 * in * out summed over the Dense kernels under `layer` (biases not counted)."""
  kernels = [m.kernel.shape for m in [layer, *layer.submodules]
             if isinstance(m, tf.keras.layers.Dense)]
  return sum(2 * int(k[0]) * int(k[1]) for k in kernels)


def gathered_rows(features, mean_history: float) -> float:
  """Embedding rows one row of `features` gathers: one per feature, the valid entries of a
  sequence (`mean_history` on average)."""
  return sum(mean_history if f.kind == schema_lib.SEQUENCE else 1.0 for f in features)


def pooling_flops(features, mean_history: float, dim: int) -> float:
  """Mean pooling's adds: mean_history * dim per sequence feature."""
  return sum(mean_history * dim for f in features if f.kind == schema_lib.SEQUENCE)


@dataclasses.dataclass
class HeadCost:
  """What scoring costs, counted from a head: per request, per candidate, per corpus item
  (precomputed offline) and per flat example (a training row, or a candidate scored naively)."""
  request_flops: float = 0.0
  candidate_flops: float = 0.0
  item_flops: float = 0.0
  example_flops: float = 0.0
  request_bytes: float = 0.0
  candidate_bytes: float = 0.0
  example_bytes: float = 0.0
  vector_dim: int = 0


def dnn_cost(head: rankers.DNNRanker, mean_history: float) -> HeadCost:
  """A DNN scoring m candidates (`candidate_logits`): the request's features go through their
  rows of the first kernel once; the candidate's rows and the rest of the MLP per candidate."""
  dim = head.embedding.bank.dim
  request = head.per_request_features
  request_names = {f.name for f in request}
  candidate = [f for f in head.input_features if f.name not in request_names]
  widths = head.embedding.part_widths()
  first = head.mlp.first_dense.kernel
  request_rows = sum(widths[f.name] for f in request)
  first_flops = 2 * int(first.shape[0]) * int(first.shape[1])
  request_first = 2 * request_rows * int(first.shape[1])
  rest = dense_flops(head) - first_flops
  cost = HeadCost(
      request_flops=request_first + pooling_flops(request, mean_history, dim),
      candidate_flops=first_flops - request_first + rest
      + pooling_flops(candidate, mean_history, dim),
      request_bytes=gathered_rows(request, mean_history) * dim * FLOAT_BYTES,
      candidate_bytes=gathered_rows(candidate, mean_history) * dim * FLOAT_BYTES)
  cost.example_flops = cost.request_flops + cost.candidate_flops
  cost.example_bytes = cost.request_bytes + cost.candidate_bytes
  return cost


def two_tower_cost(head: rankers.TwoTowerScorer, mean_history: float) -> HeadCost:
  """A two-tower scoring m candidates: the user tower once per request, the item tower once
  per corpus item (precomputed), a dot product and a d-float item vector per candidate. A user
  side with pair features (the coarse pfd teacher) must run its tower per candidate."""
  dim = head.user_embedding.bank.dim
  d = int(head.widths[-1])
  user, item = head.user_embedding.features, head.item_embedding.features
  user_flops = dense_flops(head.user_tower) + pooling_flops(user, mean_history, dim)
  item_flops = dense_flops(head.item_tower) + pooling_flops(item, mean_history, dim)
  user_bytes = gathered_rows(user, mean_history) * dim * FLOAT_BYTES
  item_bytes = gathered_rows(item, mean_history) * dim * FLOAT_BYTES
  per_pair = any(f.entity == schema_lib.PAIR for f in user)
  cost = HeadCost(item_flops=item_flops, vector_dim=d,
                  example_flops=user_flops + item_flops + 2 * d,
                  example_bytes=user_bytes + item_bytes)
  cost.candidate_flops = 2 * d + (user_flops if per_pair else 0.0)
  cost.candidate_bytes = d * FLOAT_BYTES + (user_bytes if per_pair else 0.0)
  cost.request_flops = 0.0 if per_pair else user_flops
  cost.request_bytes = 0.0 if per_pair else user_bytes
  return cost


def head_cost(head, mean_history: float) -> HeadCost:
  if head.architecture == rankers.TWO_TOWER:
    return two_tower_cost(head, mean_history)
  return dnn_cost(head, mean_history)


# ----------------------------------------------------------------------------- extrapolation


def world_counts(world_config) -> Dict[str, int]:
  return {"users": world_config.n_users, "items": world_config.n_items}


def scaled_rows(table: Table, world: Dict[str, int], target: Dict[str, int]) -> float:
  """The table's rows at scale: rows x target / world for a table that follows users or
  items (`SCALES_WITH`), unchanged otherwise."""
  entity = SCALES_WITH.get(table.group)
  return table.rows * target[entity] / world[entity] if entity else float(table.rows)


def table_bytes(tables: Sequence[Table], world: Dict[str, int], target: Dict[str, int],
                slots: int = 0) -> float:
  """Bytes of the tables at scale, float32, with `slots` optimizer slots per row."""
  return sum(scaled_rows(t, world, target) * t.dim * FLOAT_BYTES * (1 + slots) for t in tables)


def figure(value: float, kind: str, formula: str, unit: str = "") -> Dict[str, Any]:
  return {"value": float(value), "kind": kind, "formula": formula, "unit": unit}
