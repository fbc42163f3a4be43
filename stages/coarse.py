"""Coarse rank: the two-tower inner-product CTR model, distilled from privileged teachers.

    python -m stages.coarse --variant=pfd_md --world_dir=W --model_dir=M

The coarse ranker scores ~10^3 retrieved items per request, so it must be one user-tower pass
plus dot products with precomputed item vectors. User x item cross features (the user's clicks
in this item's category / shop / brand in the last 24h, views of this item in 7 days) break
that factorisation: they are privileged here. Variants:
  baseline  the student alone;
  pfd       a teacher that adds the cross features (inner product, cross features on the
            user side, as in the paper);
  md        a bigger DNN teacher without them;
  pfd_md    the fine CTR model as teacher (unified distillation): loaded from
            MODEL_DIR/fine/ctr/<teacher_variant> by default, or a DNN with the cross features
            trained in the same steps with --mode=simultaneous;
  lupi      a teacher that sees only the cross features.
--distill_unlabelled adds retrieved-but-not-shown candidates that only the teacher labels.
The export holds the user tower (a `user_vectors` signature) and the item vectors of the whole
corpus (`item_vectors.npy`), so serving is one matrix product.
"""

import os
import time
from typing import Any, Dict

from absl import app
from absl import flags
from absl import logging
import numpy as np

from data import files
from data import ids as id_lookup
from models import distillation
from models import export
from models import pipeline
from stages import common
from stages import serving

flags.DEFINE_string("teacher_variant", "baseline", "For --variant=pfd_md with a pre-trained "
                    "teacher: the fine CTR model MODEL_DIR/fine/ctr/<teacher_variant>.")
flags.DEFINE_bool("distill_unlabelled", False, "Also distil on retrieved-but-not-shown "
                  "candidates (label -1), which only the teacher labels.")
flags.DEFINE_integer("unlabelled_per_request", 3, "With --distill_unlabelled: candidates per "
                     "training request, drawn from the retrieval model's top 100.")
FLAGS = flags.FLAGS

STAGE = "coarse"
LABEL = "click"
DEFAULTS = {"teacher_variant": "baseline", "distill_unlabelled": False,
            "unlabelled_per_request": 3}


# ----------------------------------------------------------------------------- inputs


def build_inputs(world, config: common.StageConfig):
  """(train, eval) impressions; with --distill_unlabelled, unlabelled candidates appended."""
  train = world.log_arrays(config.train_days)
  evaluation = world.log_arrays([config.eval_day])
  if config.extra.get("distill_unlabelled"):
    if config.variant == "baseline":
      raise common.StageError("--distill_unlabelled needs a teacher; --variant=baseline has none")
    extra = unlabelled_candidates(world, config, train)
    train = {k: np.concatenate([v, extra[k]]) for k, v in train.items() if k in extra}
  logging.info("coarse: %d training rows (days %s), %d evaluation rows (day %d)",
               len(train[LABEL]), config.train_days, len(evaluation[LABEL]), config.eval_day)
  return train, evaluation


def unlabelled_candidates(world, config: common.StageConfig, train) -> Dict[str, np.ndarray]:
  """Items the retrieval model returns for training requests but the log never showed.

  Their features (cross features included) come from the world's point-in-time feature
  service; labels are -1, so they enter only the distillation loss.
  """
  retrieval = serving.load_retrieval(config.model_dir)
  request_ids = np.unique(train["request_id"])
  queries = serving.request_rows(world, config.train_days, request_ids)
  top_ids = retrieval.top_items(queries, k=100).astype(np.int64)
  # (request, item) pairs as one int64 key; a candidate is unseen if its key was never logged.
  n_items = np.int64(len(world.items))
  shown = np.unique(train["request_id"].astype(np.int64) * n_items + train["item_id"])
  keys = request_ids[:, None].astype(np.int64) * n_items + top_ids
  unseen = ~id_lookup.find_rows(shown, keys)[1]
  per_request = int(config.extra["unlabelled_per_request"])
  short = unseen.sum(axis=1) < per_request
  if short.any():
    raise common.StageError(f"--unlabelled_per_request={per_request}: {int(short.sum())} "
                            "training requests have fewer unshown items among retrieval's top "
                            "100; lower it")
  # A seeded uniform choice without replacement among each request's unseen candidates.
  priority = np.where(unseen, np.random.default_rng(config.seed).random(keys.shape), np.inf)
  picks = np.argsort(priority, axis=1, kind="stable")[:, :per_request]
  chosen = np.take_along_axis(top_ids, picks, 1)
  features = world.features.compute(request_ids, chosen)
  return serving.flatten_candidates(world.schema, features, request_ids, chosen,
                                    labels=("click", "conversion"))


# ----------------------------------------------------------------------------- model


def build_model(world, config: common.StageConfig, train_arrays, out_dir: str):
  """The two-tower student and the variant's teacher."""
  variant = config.variant
  args = dict(architecture="two_tower", label=LABEL, distill_weight=config.distill_lambda,
              swap_step=config.swap_step, unshared=config.unshared_features,
              share_embeddings=config.share_embeddings,
              widths=config.hidden_units, embedding_dim=config.embedding_dim,
              distill_unlabelled=bool(config.extra.get("distill_unlabelled")))
  if variant == "baseline" or config.mode == "simultaneous":
    return distillation.build_distillation(world.schema, STAGE, teacher_kind=variant,
                                           mode="simultaneous", **args)
  if variant == "pfd_md":
    path = common.require_stage(
        config.model_dir, "fine/ctr", config.extra["teacher_variant"],
        f"python -m stages.fine --task=ctr --variant={config.extra['teacher_variant']} "
        f"--world_dir={config.world_dir} --model_dir={config.model_dir}")
    teacher = export.load_serving(path).logits
  else:
    # The paper's PFD-only coarse teacher is itself an inner-product model.
    architecture = "two_tower" if variant == "pfd" else "dnn"
    teacher = common.pretrain_teacher(world.schema, STAGE, variant, train_arrays, config,
                                      out_dir, label=LABEL, architecture=architecture)
  return distillation.build_distillation(world.schema, STAGE, teacher_kind=variant,
                                         mode="pretrained", pretrained_teacher=teacher, **args)


# ----------------------------------------------------------------------------- export


def export_coarse(world, config, model, out_dir: str) -> None:
  """The user tower as a SavedModel plus every item's vector, precomputed."""
  facts = common.run_facts(world, config, STAGE)
  facts["scale"] = model.student.scale
  path = export.export_serving(model, STAGE, world.schema, os.path.join(out_dir, "saved_model"),
                               extra_meta=facts)
  items = {name: world.items[name].to_numpy() for name in model.student.item_input_names}
  vectors = pipeline.predict(lambda b: model.student.item_vectors(b, training=False), items)
  files.write_npy(os.path.join(path, serving.ITEM_VECTORS), vectors.astype(np.float32))


# ----------------------------------------------------------------------------- the command


def train(config: common.StageConfig) -> Dict[str, Any]:
  """Trains, evaluates and exports one coarse-rank variant; returns its metrics."""
  if config.variant not in common.VARIANTS:
    raise common.StageError(f"--variant={config.variant} is not valid for the coarse stage; "
                            f"expected one of {', '.join(common.VARIANTS)}")
  config.extra = {**DEFAULTS, **config.extra}
  config.mode = config.mode or ("pretrained" if config.variant == "pfd_md" else "simultaneous")
  world = common.open_world(config)
  common.claim_model_dir(config.model_dir, world)
  out_dir = common.stage_dir(config.model_dir, STAGE, config.variant)
  done = common.finished_metrics(out_dir, config)
  if done is not None:
    return done
  common.seed_everything(config.seed)

  train_arrays, eval_arrays = build_inputs(world, config)
  started = time.perf_counter()  # Teacher pre-training included: the cost study reads it.
  model = build_model(world, config, train_arrays, out_dir)
  common.fit(model, train_arrays, config, out_dir)
  train_seconds = time.perf_counter() - started

  metrics = common.evaluate_heads(model, eval_arrays, LABEL)
  metrics["n_train"] = int(len(train_arrays[LABEL]))
  metrics["train_seconds"] = train_seconds
  metrics.update(common.run_facts(world, config, STAGE))
  metrics["distill_unlabelled"] = bool(config.extra.get("distill_unlabelled"))
  export_coarse(world, config, model, out_dir)
  files.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  logging.info("coarse %s: auc=%.4f teacher_auc=%s -> %s", config.variant, metrics["auc"],
               metrics.get("teacher_auc"), out_dir)
  return metrics


def run():
  app.run(common.run_main(train, lambda: {
      "teacher_variant": FLAGS.teacher_variant, "distill_unlabelled": FLAGS.distill_unlabelled,
      "unlabelled_per_request": FLAGS.unlabelled_per_request}))


if __name__ == "__main__":
  run()
