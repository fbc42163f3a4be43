"""Retrieval: a two-tower model trained on clicks with in-batch negatives, and a top-K index.

    python -m stages.retrieval --world_dir=W --model_dir=M

Candidate generation narrows the whole corpus (~10^5 items) to ~10^3 for the coarse ranker.
The model is trained with the TFRS Retrieval task (clicked (user, item) pairs are positives,
the other items of the batch negatives); the export is a TFRS BruteForce index over every
item of the corpus behind a serving signature that reads only the user side: user profile,
behaviour sequence and request context. It also holds the user tower (signature
`user_vectors`) and every item's vector (item_vectors.npy, item_ids.npy), from which an
approximate index is built: `--index=faiss_ivf|faiss_hnsw` (models.ann) measures the metrics
through that index and saves it beside the vectors, where the replay's `--index` finds it.
Metrics are recall@K and hit@K of the eval day's clicked items.
"""

import os
import time
from typing import Any, Dict, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from data.plumbing import files
from data.stats import metrics as metrics_lib
from data.world import io
from models import ann
from models import distillation
from models import export
from models import pipeline
from models import rankers
from stages import config as config_lib
from stages import driver
from stages import serving

RetrievalConfig = config_lib.RetrievalConfig
KS = (50, 100, 500, 1000)
EVAL_CHUNK = 2048  # requests whose top items are held at once in evaluation
SCORE_BATCH = 256  # queries scored against the whole corpus at once (a [256, items] matrix)


class RetrievalModel(tfrs.models.Model):
  """A two-tower scorer trained with the TFRS Retrieval task (in-batch softmax)."""

  def __init__(self, scorer, temperature: float):
    super().__init__()
    self.scorer = scorer
    self.task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=True)

  def build_variables(self, batch) -> None:
    """Creates the towers' variables from one batch (stages.distribute.build_variables)."""
    self.scorer(batch, training=False)

  def compute_loss(self, batch, training=False) -> tf.Tensor:
    users = self.scorer.user_vectors(batch, training=training)
    items = self.scorer.item_vectors(batch, training=training)
    return self.task(users, items, candidate_ids=batch["item_id"], compute_metrics=False)


class _UserTower(tf.keras.layers.Layer):
  """The scorer's user side as a query model for the TFRS index."""

  def __init__(self, scorer, **kwargs):
    super().__init__(**kwargs)
    self.scorer = scorer

  def call(self, batch):
    return self.scorer.user_vectors(batch, training=False)


def item_vectors(world, model: RetrievalModel) -> np.ndarray:
  """Every item's vector from the item tower, [n_items, d] in world.items order."""
  items = {name: world.items[name].to_numpy() for name in model.scorer.item_input_names}
  return pipeline.predict(lambda b: model.scorer.item_vectors(b, training=False), items)


def build_index(world, model: RetrievalModel, k: int,
                spec: ann.IndexSpec = ann.IndexSpec(),
                vectors: Optional[np.ndarray] = None):
  """A top-k index over every item of the corpus: TFRS BruteForce, or `spec`'s ANN index
  behind the same TopK call (models.ann)."""
  vectors = item_vectors(world, model) if vectors is None else vectors
  index = ann.make_index(spec, _UserTower(model.scorer), k)
  ids = world.items["item_id"].to_numpy(np.int64)
  if spec.exact:
    index.index(tf.constant(vectors), tf.constant(ids))
  else:
    index.index(vectors, ids)
  return index


class RetrievalServing(tf.Module):
  """The exported index: user-side features in, top-k item ids and scores out (exact); and
  the user tower alone (`user_vectors`), for an ANN index over the exported item vectors."""

  def __init__(self, index, specs: Dict[str, tf.TensorSpec]):
    super().__init__()
    self.index = index
    self.serve = tf.function(self._serve, input_signature=[specs])
    self.user_vectors = tf.function(self._user_vectors, input_signature=[specs])

  def _serve(self, batch):
    scores, ids = self.index(batch)
    return {"scores": scores, "item_ids": ids}

  def _user_vectors(self, batch):
    return {"user_vectors": self.index.query_model(batch)}


class RetrievalTask(driver.StageTask[RetrievalConfig]):
  """Clicked pairs in, a two-tower trained with in-batch negatives, a top-K index out."""
  CONFIG = RetrievalConfig
  label = "click"

  def build_inputs(self) -> driver.Inputs:
    """Clicked impressions of the training days: the positive (user, item) pairs."""
    days = self.config.days
    logs = self.world.log_arrays(days, io.stage_columns(self.world.schema, self.config.stage),
                                  narrow=True)
    clicked = pipeline.take_rows(logs, logs["click"] > 0)
    if len(clicked["click"]) == 0:
      raise config_lib.StageError(f"no clicks in --train_days {days}")
    logging.info("retrieval: %d clicked pairs from days %s", len(clicked["click"]), days)
    return driver.Inputs(clicked)

  def build_model(self, inputs: driver.Inputs) -> RetrievalModel:
    scorer = distillation.build_student(self.world.schema, self.config.stage,
                                        architecture=rankers.TWO_TOWER,
                                        widths=self.config.hidden_units,
                                        embedding_dim=self.config.embedding_dim,
                                        name="retrieval")
    return RetrievalModel(scorer, self.config.temperature)

  def evaluate(self, model: RetrievalModel, inputs: driver.Inputs) -> Dict[str, Any]:
    """recall@K and hit@K of each eval-day request's clicked items, from the index
    (--index); an ANN index's build seconds too."""
    self.vectors = item_vectors(self.world, model)
    spec = ann.IndexSpec(self.config.index)
    started = time.perf_counter()
    self.index = build_index(self.world, model, self._k(), spec, self.vectors)
    result: Dict[str, Any] = {"index": spec.kind}
    if not spec.exact:
      result["index_build_seconds"] = time.perf_counter() - started
    result.update(evaluate_index(self.world, self.config.evaluation_day, self.index))
    return result

  def _k(self) -> int:
    return min(self.config.export_k, len(self.world.items))

  def export(self, model: RetrievalModel, facts: Dict[str, Any]) -> None:
    """Audits the query inputs against the schema, then writes the SavedModel atomically
    (an exact index: it serves alone), then the item vectors and ids and any ANN index."""
    names = model.scorer.user_input_names
    self.world.schema.check_serving(self.config.stage, names)
    vectors = getattr(self, "vectors", None)
    if vectors is None:  # an index built outside `evaluate` (benchmarks.cost_model)
      vectors = self.vectors = item_vectors(self.world, model)
    exact = self.index if self.index.is_exact() else build_index(
        self.world, model, self._k(), vectors=vectors)
    module = RetrievalServing(exact, export.signature_specs([self.world.schema[n] for n in names]))
    spec = self.index.spec if isinstance(self.index, ann.FaissTopK) else ann.IndexSpec()
    meta = {"stage": self.config.stage, "architecture": "retrieval_index",
            "query_inputs": names, "k": self._k(), "index": spec.describe(),
            "item_vectors": serving.ITEM_VECTORS, "item_ids": serving.ITEM_IDS, "extra": facts}
    path = export.save_module(module, os.path.join(self.out_dir, "saved_model"),
                              {"serving_default": module.serve,
                               "user_vectors": module.user_vectors}, meta)
    files.write_npy(os.path.join(path, serving.ITEM_VECTORS), self.vectors.astype(np.float32))
    files.write_npy(os.path.join(path, serving.ITEM_IDS),
                    self.world.items["item_id"].to_numpy(np.int64))
    if isinstance(self.index, ann.FaissTopK):
      self.index.save(path)


def evaluate_index(world, day: int, index, chunk: int = EVAL_CHUNK) -> Dict[str, Any]:
  """recall@K and hit@K of each of `day`'s requests' clicked items.

  Requests are scored `chunk` at a time (in batches of SCORE_BATCH: each scores the whole
  corpus) and their per-request recall and hit kept, so memory follows the chunk, not the
  day; the figures are the means over every request, the same as scoring them all at once.
  """
  logs = world.logs([day], ["request_id", "item_id", "click"])
  clicks = logs[logs["click"] > 0]
  relevant: List[np.ndarray] = [g["item_id"].to_numpy() for _, g in clicks.groupby("request_id")]
  request_ids = np.array(sorted(clicks["request_id"].unique()))
  queries = serving.request_rows(world, [day], request_ids)
  queries = {n: queries[n] for n in index.query_model.scorer.user_input_names}
  k_max = int(index._k)
  ks = [k for k in KS if k <= k_max]
  per_request: Dict[str, List[np.ndarray]] = {f"{m}@{k}": [] for m in ("recall", "hit")
                                               for k in ks}
  for start in range(0, len(request_ids), chunk):
    part = {n: v[start:start + chunk] for n, v in queries.items()}
    top = serving.top_items(lambda batch: index(batch)[1], part, k=k_max,
                            batch_size=SCORE_BATCH)
    wanted = relevant[start:start + chunk]
    for k in ks:
      per_request[f"recall@{k}"].append(metrics_lib.per_request_recall_at_k(top, wanted, k))
      per_request[f"hit@{k}"].append(metrics_lib.per_request_hit_at_k(top, wanted, k))
  result: Dict[str, Any] = {"n_eval": int(len(request_ids)), "n_items": int(len(world.items))}
  for name, values in per_request.items():
    result[name] = float(np.nanmean(np.concatenate(values))) if values else float("nan")
  return result


def train(config: RetrievalConfig) -> Dict[str, Any]:
  """Trains, evaluates and exports the retrieval model; returns its metrics."""
  return driver.train(RetrievalTask, config)


def run() -> None:
  driver.run(RetrievalTask, "stages.retrieval")


if __name__ == "__main__":
  run()
