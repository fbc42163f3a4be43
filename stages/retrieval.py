"""Retrieval: a two-tower model trained on clicks with in-batch negatives, and a top-K index.

    python -m stages.retrieval --world_dir=W --model_dir=M

Candidate generation narrows the whole corpus (~10^5 items) to ~10^3 for the coarse ranker.
The model is trained with the TFRS Retrieval task (clicked (user, item) pairs are positives,
the other items of the batch negatives); the export is a TFRS BruteForce index over every
item of the corpus behind a serving signature that reads only the user side: user profile,
behaviour sequence and request context. Metrics are recall@K and hit@K of the eval day's
clicked items.
"""

import os
from typing import Any, Dict, List

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from data import files
from models import distillation
from models import export
from data import metrics as metrics_lib
from models import pipeline
from stages import common
from stages import serving

flags.DEFINE_float("temperature", 0.1, "Softmax temperature of the in-batch retrieval loss "
                   "(the towers' vectors are unit length).")
flags.DEFINE_integer("export_k", 1000, "How many items the exported index returns per query.")
FLAGS = flags.FLAGS

STAGE = "retrieval"
VARIANT = "baseline"
KS = (50, 100, 500, 1000)
DEFAULTS = {"temperature": 0.1, "export_k": 1000}


# ----------------------------------------------------------------------------- inputs


def build_inputs(world, config: common.StageConfig):
  """Clicked impressions of the training days: the positive (user, item) pairs."""
  logs = world.log_arrays(config.train_days)
  clicked = pipeline.take_rows(logs, logs["click"] > 0)
  if len(clicked["click"]) == 0:
    raise common.StageError(f"no clicks in --train_days {config.train_days}")
  logging.info("retrieval: %d clicked pairs from days %s", len(clicked["click"]),
               config.train_days)
  return clicked


# ----------------------------------------------------------------------------- model


class RetrievalModel(tfrs.models.Model):
  """A two-tower scorer trained with the TFRS Retrieval task (in-batch softmax)."""

  def __init__(self, scorer, temperature: float):
    super().__init__()
    self.scorer = scorer
    self.task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=True)

  def compute_loss(self, batch, training=False) -> tf.Tensor:
    users = self.scorer.user_vectors(batch, training=training)
    items = self.scorer.item_vectors(batch, training=training)
    return self.task(users, items, candidate_ids=batch["item_id"], compute_metrics=False)


def build_model(schema, config: common.StageConfig) -> RetrievalModel:
  scorer = distillation.build_student(schema, STAGE, architecture="two_tower",
                                      widths=config.hidden_units,
                                      embedding_dim=config.embedding_dim, name="retrieval")
  return RetrievalModel(scorer, config.extra["temperature"])


# ----------------------------------------------------------------------------- index and export


class _UserTower(tf.keras.layers.Layer):
  """The scorer's user side as a query model for the TFRS index."""

  def __init__(self, scorer, **kwargs):
    super().__init__(**kwargs)
    self.scorer = scorer

  def call(self, batch):
    return self.scorer.user_vectors(batch, training=False)


def build_index(world, model: RetrievalModel, k: int) -> tfrs.layers.factorized_top_k.BruteForce:
  """A BruteForce top-k index over every item of the corpus."""
  items = {name: world.items[name].to_numpy() for name in model.scorer.item_input_names}
  vectors = pipeline.predict(lambda b: model.scorer.item_vectors(b, training=False), items)
  index = tfrs.layers.factorized_top_k.BruteForce(_UserTower(model.scorer), k=k)
  index.index(tf.constant(vectors), tf.constant(world.items["item_id"].to_numpy(np.int64)))
  return index


class RetrievalServing(tf.Module):
  """The exported index: user-side features in, top-k item ids and scores out."""

  def __init__(self, index, specs: Dict[str, tf.TensorSpec]):
    super().__init__()
    self.index = index
    self.serve = tf.function(self._serve, input_signature=[specs])

  def _serve(self, batch):
    scores, ids = self.index(batch)
    return {"scores": scores, "item_ids": ids}


def export_index(world, model: RetrievalModel, index, out_dir: str, facts) -> str:
  """Audits the query inputs against the schema, then writes the SavedModel atomically."""
  names = model.scorer.user_input_names
  world.schema.check_serving(STAGE, names)
  module = RetrievalServing(index, export.signature_specs([world.schema[n] for n in names]))
  meta = {"stage": STAGE, "architecture": "retrieval_index", "query_inputs": names,
          "k": int(index._k), "extra": facts}
  return export.save_module(module, os.path.join(out_dir, "saved_model"),
                            {"serving_default": module.serve}, meta)


# ----------------------------------------------------------------------------- evaluation


def evaluate(world, config: common.StageConfig, index) -> Dict[str, Any]:
  """recall@K and hit@K of each eval-day request's clicked items."""
  logs = world.logs([config.eval_day])
  clicks = logs[logs["click"] > 0]
  relevant: List[np.ndarray] = [g["item_id"].to_numpy() for _, g in clicks.groupby("request_id")]
  request_ids = np.array(sorted(clicks["request_id"].unique()))
  queries = serving.request_rows(world, [config.eval_day], request_ids)
  queries = {n: queries[n] for n in index.query_model.scorer.user_input_names}
  top = serving.top_items(lambda batch: index(batch)[1], queries, k=int(index._k))
  ks = [k for k in KS if k <= top.shape[1]]
  result: Dict[str, Any] = {"n_eval": int(len(request_ids)), "n_items": int(len(world.items))}
  for k, value in metrics_lib.recall_at_k(top, relevant, ks).items():
    result[f"recall@{k}"] = value
  for k, value in metrics_lib.hit_at_k(top, relevant, ks).items():
    result[f"hit@{k}"] = value
  return result


# ----------------------------------------------------------------------------- the command


def train(config: common.StageConfig) -> Dict[str, Any]:
  """Trains, evaluates and exports the retrieval model; returns its metrics."""
  if config.variant != VARIANT:
    raise common.StageError(f"--variant={config.variant}: retrieval has one variant, "
                            f"'{VARIANT}' (distillation applies to the ranking stages)")
  config.extra = {**DEFAULTS, **config.extra}
  world = common.open_world(config)
  common.claim_model_dir(config.model_dir, world)
  out_dir = common.stage_dir(config.model_dir, STAGE, VARIANT)
  done = common.finished_metrics(out_dir, config)
  if done is not None:
    return done
  common.seed_everything(config.seed)

  clicked = build_inputs(world, config)
  model = build_model(world.schema, config)
  common.fit(model, clicked, config, out_dir)

  k = min(int(config.extra["export_k"]), len(world.items))
  index = build_index(world, model, k)
  metrics = evaluate(world, config, index)
  metrics["n_train"] = int(len(clicked["click"]))
  metrics.update(common.run_facts(world, config, STAGE))
  export_index(world, model, index, out_dir, common.run_facts(world, config, STAGE))
  files.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  logging.info("retrieval: %s -> %s", {k: v for k, v in metrics.items() if "@" in k}, out_dir)
  return metrics


def run():
  app.run(common.run_main(train, lambda: {"temperature": FLAGS.temperature,
                                          "export_k": FLAGS.export_k}))


if __name__ == "__main__":
  run()
