"""Loading the stages' exports for serving, and shaping candidate batches for them.

Every exported model is used through these loaders: the retrieval index (user side in, top-k
item ids out), the coarse scorer (a user-vector function plus the corpus's precomputed item
vectors: one matrix product per request) and the fine rankers (serving features in,
probabilities out). None of them reads a privileged feature: each export's signature holds only
what its stage may serve, and a batch's other columns are ignored.
"""

import os
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from data.plumbing import files
from data.plumbing.command import UserError
from data.world.schema import ITEM
from data.world.schema import PAIR
from data.world.schema import UNLABELLED
from models import ann
from models import export
from stages import layout

ITEM_VECTORS = "item_vectors.npy"
ITEM_IDS = "item_ids.npy"
Arrays = Dict[str, np.ndarray]


class RetrievalIndex:
  """The exported retrieval index: `top_items(queries, k)` -> item ids [n, k], best first.

  `index` picks how the corpus is searched (models.ann): brute_force runs the export's own
  exact TFRS index; an ANN kind runs the export's user tower, then a FAISS index over its item
  vectors, read from the export when it was saved there with the same settings, else built
  here (`build_seconds`)."""

  def __init__(self, path: str, index: str = ann.BRUTE_FORCE):
    self.path = path
    self.meta = files.read_json(os.path.join(path, export.META_FILE))
    self.spec = ann.IndexSpec(index)
    self.loaded = loaded = export.load_saved_model(path)
    self.query_inputs = list(self.meta["query_inputs"])
    self.k = int(self.meta["k"])
    self.build_seconds: Optional[float] = None
    if self.spec.exact:
      self._serve = loaded.signatures["serving_default"]
      self.ann: Optional[ann.FaissTopK] = None
      return
    if "user_vectors" not in loaded.signatures or "item_vectors" not in self.meta:
      raise UserError(f"--index={index}: the retrieval export at {path} has no user tower and "
                      "item vectors (it predates ANN indexes); retrain it with `python -m "
                      "stages.retrieval`")
    user_vectors = loaded.signatures["user_vectors"]
    self.ann = ann.FaissTopK(self.spec, lambda batch: user_vectors(**batch)["user_vectors"],
                             k=self.k)
    ids = np.load(os.path.join(path, self.meta["item_ids"]))
    if (self.meta.get("index") or {}) == self.spec.describe() and os.path.exists(
        os.path.join(path, ann.INDEX_FILE)):
      self.ann.load(path, ids)
      return
    started = time.perf_counter()
    self.ann.index(np.load(os.path.join(path, self.meta["item_vectors"])), ids)
    self.build_seconds = time.perf_counter() - started
    logging.info("built a %s index over %d items in %.2fs", index, len(ids), self.build_seconds)

  def top_items(self, queries: Arrays, k: int, batch_size: int = 1024) -> np.ndarray:
    if k > self.k:
      raise ValueError(f"{self.path} returns at most {self.k} items per query, asked for {k}")
    inputs = {n: queries[n] for n in self.query_inputs}
    if self.ann is not None:
      return top_items(lambda batch: self.ann(batch, k)[1], inputs, k, batch_size)
    return top_items(lambda batch: self._serve(**batch)["item_ids"], inputs, k, batch_size)


def top_items(ids_fn, queries: Arrays, k: int, batch_size: int = 1024) -> np.ndarray:
  """Runs `ids_fn` (batch of query tensors -> top item ids) over `queries` in batches."""
  n = len(next(iter(queries.values())))
  out = [np.asarray(ids_fn({name: tf.constant(v[s:s + batch_size])
                            for name, v in queries.items()}))[:, :k]
         for s in range(0, n, batch_size)]
  return np.concatenate(out) if out else np.zeros((0, k), np.int64)


class CoarseScorer:
  """The exported two-tower: `score(queries, item_ids)` = scale * <user vector, item vector>."""

  def __init__(self, path: str):
    self.path = path
    self.model = export.load_serving(path)
    self.item_vectors = np.load(os.path.join(path, ITEM_VECTORS))
    self.scale = float(self.model.meta["extra"]["scale"])
    self.user_inputs = list(self.model.meta["user_inputs"])

  def user_vectors(self, queries: Arrays, batch_size: int = 4096) -> np.ndarray:
    n = len(next(iter(queries.values())))
    chunks = [self.model.user_vectors({k: queries[k][s:s + batch_size]
                                       for k in self.user_inputs}).numpy()
              for s in range(0, n, batch_size)]
    return np.concatenate(chunks)

  def score(self, queries: Arrays, item_ids: np.ndarray) -> np.ndarray:
    """Logits [n, m] of candidates `item_ids` [n, m] for each query row."""
    users = self.user_vectors(queries)
    return self.scale * np.einsum("nd,nmd->nm", users, self.item_vectors[item_ids])


# Which meta entry lists the inputs of each signature (what a loader passes to it).
SIGNATURE_META_INPUTS = {"serving_default": "inputs", "candidates": "inputs",
                         "user_vectors": "user_inputs", "item_vectors": "item_inputs"}


def signature_inputs(loaded) -> Dict[str, List[str]]:
  """signature name -> its input names, read from the SavedModel itself (not its meta)."""
  return {name: sorted(function.structured_input_signature[1])
          for name, function in loaded.signatures.items()}


def signature_problems(inputs: Dict[str, List[str]], meta: Dict[str, Any], schema,
                       stage: str) -> List[str]:
  """What is wrong with an export's signature inputs: a column its stage may not read online
  (by the world's schema), or one its meta does not list (the loader would not pass it)."""
  allowed = {f.name for f in schema.serving_features(stage)}
  problems = []
  for signature, names in sorted(inputs.items()):
    listed_in = ("query_inputs" if meta.get("architecture") == "retrieval_index"
                 else SIGNATURE_META_INPUTS.get(signature, "inputs"))
    listed = set(meta.get(listed_in) or ())
    for name in names:
      if name not in allowed:
        why = schema[name].availability if name in schema.names else "not in the schema"
        problems.append(f"signature {signature!r} reads {name!r} ({why}; {stage} may not read "
                        "it online)")
      elif name not in listed:
        problems.append(f"signature {signature!r} takes {name!r}, which its meta's "
                        f"{listed_in!r} does not list")
  return problems


def check_export_inputs(path: str, loaded, meta: Dict[str, Any], schema, stage: str) -> None:
  """Refuses an export whose signatures read what its stage may not serve, or take inputs its
  meta does not list (a forged or hand-edited export), naming the export and the column."""
  problems = signature_problems(signature_inputs(loaded), meta, schema, stage)
  if problems:
    raise UserError(f"the {stage} export at {path} is not servable: {'; '.join(problems)}; "
                    "retrain it with its stage command")


def check_loaded(name: str, model, variant: str, world, asked: str) -> None:
  """Refuses a loaded export (`load_retrieval`, `load_coarse`, `load_fine`) that is not the
  `name` stage's `variant` model (its recorded identity), or whose signatures read what the
  stage may not serve or take inputs its meta does not list. World and training days are the
  caller's to check (a replay refuses a model trained on the day it replays)."""
  served = getattr(model, "model", model)  # a CoarseScorer wraps its ServingModel
  loaded = getattr(served, "loaded", None) or served._loaded  # ServingModel keeps it private
  layout.check_export_identity(model.path, served.meta, name, variant, None, asked)
  check_export_inputs(model.path, loaded, served.meta, world.schema, name)


def load_retrieval(model_dir: str, index: str = ann.BRUTE_FORCE) -> RetrievalIndex:
  return RetrievalIndex(layout.require_stage(
      model_dir, "retrieval", "baseline", "python -m stages.retrieval --world_dir=... "
      f"--model_dir={model_dir}"), index)


def load_coarse(model_dir: str, variant: str) -> CoarseScorer:
  return CoarseScorer(layout.require_stage(
      model_dir, "coarse", variant, f"python -m stages.coarse --variant={variant} "
      f"--world_dir=... --model_dir={model_dir}"))


def load_fine(model_dir: str, task: str, variant: str) -> export.ServingModel:
  return export.load_serving(layout.require_stage(
      model_dir, f"fine/{task}", variant, f"python -m stages.fine --task={task} "
      f"--variant={variant} --world_dir=... --model_dir={model_dir}"))


def request_rows(world, days: Sequence[int], request_ids: np.ndarray) -> Arrays:
  """The user-side columns (profile, behaviour sequence, context) of the given requests."""
  requests = world.request_arrays(list(days))
  order = np.argsort(requests["request_id"], kind="stable")
  sorted_ids = requests["request_id"][order]
  pos = np.minimum(np.searchsorted(sorted_ids, request_ids), len(sorted_ids) - 1)
  missing = sorted_ids[pos] != request_ids
  if missing.any():
    raise ValueError(f"{int(missing.sum())} request ids are not requests of days {list(days)}, "
                     f"e.g. {np.asarray(request_ids)[missing][:3].tolist()}")
  rows = {k: v[order[pos]] for k, v in requests.items()}
  for name in world.users.columns:
    if name not in rows:
      rows[name] = world.users[name].to_numpy()[rows["user_id"]]
  return rows


def flatten_candidates(schema, features: Arrays, request_ids: np.ndarray,
                       item_ids: np.ndarray, labels: Sequence[str] = ()) -> Arrays:
  """Per-(request, candidate) rows from a feature-service result.

  Item and pair features in `features` are [n, k]; user and context ones are per request
  and are repeated k times. The result has n*k rows, request-major. Each name in `labels`
  becomes a column of -1 (unlabelled: only a teacher can label these rows).
  """
  n, k = item_ids.shape
  per_candidate = {f.name for f in schema.features if f.entity in (ITEM, PAIR)}
  rows: Arrays = {}
  for name, values in features.items():
    values = np.asarray(values)
    rows[name] = values.reshape(-1) if name in per_candidate else np.repeat(values, k, axis=0)
  rows["request_id"] = np.repeat(np.asarray(request_ids), k)
  rows["item_id"] = item_ids.reshape(-1).astype(np.int64)
  for name in labels:
    rows[name] = np.full(n * k, float(UNLABELLED), np.float32)
  return rows
