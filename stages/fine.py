"""Fine rank: the CTR model over impressions and the CVR model over clicked impressions.

    python -m stages.fine --task=ctr --world_dir=W --model_dir=M
    python -m stages.fine --task=cvr --variant=pfd --world_dir=W --model_dir=M

At fine rank the user x item cross features are regular serving inputs, so the CTR model has
no privileged features: its variants are `baseline` and `md` (a bigger teacher). The CVR model
is trained on clicks only; the post-click signals (dwell, comments, chat, cart, favourite) are
its privileged features, read by the `pfd`, `pfd_md` and `lupi` teachers and never served.
The fine CTR model is also the coarse ranker's PFD+MD teacher (see `stages.coarse`).
"""

import os
import time
from typing import Any, Dict

from absl import app
from absl import flags
from absl import logging

from data import files
from data import numeric
from models import distillation
from models import export
from data import metrics as metrics_lib
from models import pipeline
from stages import common

flags.DEFINE_enum("task", "ctr", ["ctr", "cvr"], "ctr: click model over impressions; "
                  "cvr: conversion model over clicks.")
flags.DEFINE_string("ctr_variant", "baseline", "For --task=cvr: the fine CTR model whose pCTR "
                    "makes the CTCVR evaluation (MODEL_DIR/fine/ctr/<ctr_variant>).")
FLAGS = flags.FLAGS

STAGE = {"ctr": "fine_ctr", "cvr": "fine_cvr"}
LABEL = {"ctr": "click", "cvr": "conversion"}
VARIANTS = {"ctr": ("baseline", "md"), "cvr": common.VARIANTS}
DEFAULTS = {"task": "ctr", "ctr_variant": "baseline"}


# ----------------------------------------------------------------------------- inputs


def build_inputs(world, config: common.StageConfig, task: str):
  """(train, eval) column dicts: impressions for CTR, clicked impressions for CVR."""
  train = world.log_arrays(config.train_days)
  evaluation = world.log_arrays([config.eval_day])
  if task == "cvr":
    train = pipeline.take_rows(train, train["click"] > 0)
    evaluation = pipeline.take_rows(evaluation, evaluation["click"] > 0)
  for name, arrays in (("training", train), ("evaluation", evaluation)):
    if len(arrays[LABEL[task]]) == 0:
      raise common.StageError(f"no {name} rows for --task={task} in the chosen days")
  logging.info("fine %s: %d training rows (days %s), %d evaluation rows (day %d)", task,
               len(train[LABEL[task]]), config.train_days, len(evaluation[LABEL[task]]),
               config.eval_day)
  return train, evaluation


# ----------------------------------------------------------------------------- model


def build_model(schema, config: common.StageConfig, task: str, train_arrays, out_dir: str):
  """The student and, for a distilled variant, its teacher (pre-trained first if asked)."""
  stage, variant = STAGE[task], config.variant
  common_args = dict(architecture="dnn", label=LABEL[task], distill_weight=config.distill_lambda,
                     swap_step=config.swap_step, unshared=config.unshared_features,
                     share_embeddings=config.share_embeddings,
                     widths=config.hidden_units, embedding_dim=config.embedding_dim)
  if variant == "baseline" or config.mode == "simultaneous":
    return distillation.build_distillation(schema, stage, teacher_kind=variant,
                                           mode="simultaneous", **common_args)
  teacher = common.pretrain_teacher(schema, stage, variant, train_arrays, config, out_dir,
                                    label=LABEL[task])
  return distillation.build_distillation(schema, stage, teacher_kind=variant, mode="pretrained",
                                         pretrained_teacher=teacher, **common_args)


# ----------------------------------------------------------------------------- evaluation


def ctcvr_metrics(world, config: common.StageConfig, model) -> Dict[str, Any]:
  """CTCVR AUC on every eval-day impression: pCTR (fine CTR export) x pCVR (this student)."""
  path = os.path.join(common.stage_dir(config.model_dir, "fine/ctr", config.extra["ctr_variant"]),
                      "saved_model")
  if not os.path.exists(os.path.join(path, "saved_model.pb")):
    logging.warning("no fine CTR model at %s: CTCVR AUC skipped (train it with "
                    "`python -m stages.fine --task=ctr`)", path)
    return {}
  impressions = world.log_arrays([config.eval_day])
  p_ctr = export.load_serving(path).predict(impressions)
  p_cvr = numeric.sigmoid(pipeline.predict(lambda b: model.student(b, training=False),
                                          impressions))
  return {"ctcvr_auc": metrics_lib.auc(impressions["conversion"], p_ctr * p_cvr),
          "ctcvr_n": int(len(p_cvr))}


# ----------------------------------------------------------------------------- the command


def train(config: common.StageConfig) -> Dict[str, Any]:
  """Trains, evaluates and exports one fine-rank model; returns its metrics."""
  config.extra = {**DEFAULTS, **config.extra}
  task = config.extra["task"]
  if config.variant not in VARIANTS[task]:
    hint = (" (at fine rank the cross features are regular inputs, so the CTR model has no "
            "privileged features to distil)" if task == "ctr" else "")
    raise common.StageError(f"--variant={config.variant} is not valid for --task={task}; "
                            f"expected one of {', '.join(VARIANTS[task])}{hint}")
  config.mode = config.mode or "simultaneous"
  world = common.open_world(config)
  common.claim_model_dir(config.model_dir, world)
  out_dir = common.stage_dir(config.model_dir, f"fine/{task}", config.variant)
  done = common.finished_metrics(out_dir, config)
  if done is not None:
    return done
  common.seed_everything(config.seed)

  train_arrays, eval_arrays = build_inputs(world, config, task)
  started = time.perf_counter()  # Teacher pre-training included: the cost study reads it.
  model = build_model(world.schema, config, task, train_arrays, out_dir)
  common.fit(model, train_arrays, config, out_dir)
  train_seconds = time.perf_counter() - started

  metrics = common.evaluate_heads(model, eval_arrays, LABEL[task])
  metrics["n_train"] = int(len(train_arrays[LABEL[task]]))
  metrics["train_seconds"] = train_seconds
  if task == "cvr":
    metrics.update(ctcvr_metrics(world, config, model))
  metrics.update(common.run_facts(world, config, STAGE[task]))
  export.export_serving(model, STAGE[task], world.schema, os.path.join(out_dir, "saved_model"),
                        extra_meta=common.run_facts(world, config, STAGE[task]))
  files.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  logging.info("fine %s %s: auc=%.4f gauc=%.4f -> %s", task, config.variant, metrics["auc"],
               metrics["gauc"], out_dir)
  return metrics


def run():
  app.run(common.run_main(train, lambda: {"task": FLAGS.task, "ctr_variant": FLAGS.ctr_variant}))


if __name__ == "__main__":
  run()
