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
from typing import Any, Dict, Optional

from absl import logging
import numpy as np

from data.plumbing import files
from data.stats import headroom
from data.world import ids as id_lookup
from data.world import io
from models import export
from models import pipeline
from models import rankers
from stages import config as config_lib
from stages import driver
from stages import layout
from stages import serving
from stages import teachers
from stages import training

CoarseConfig = config_lib.CoarseConfig
LABEL = "click"


class CoarseTask(driver.StageTask[CoarseConfig]):
  """The coarse two-tower: impressions (plus unlabelled candidates), a teacher, item vectors."""
  CONFIG = CoarseConfig
  label = LABEL

  @classmethod
  def upstream(cls, config: CoarseConfig) -> Dict[str, Optional[str]]:
    """The fine CTR export that teaches pfd_md, and the retrieval export that picks the
    unlabelled candidates."""
    exports = teachers.upstream(config)
    if config.distill_unlabelled:
      exports["retrieval/baseline"] = layout.export_identity(config.model_dir, "retrieval",
                                                             "baseline")
    return exports

  def build_inputs(self) -> driver.Inputs:
    """Impressions; with --distill_unlabelled, unlabelled candidates appended."""
    config = self.config
    columns = io.stage_columns(self.world.schema, config.stage)
    train = self.world.log_arrays(config.days, columns, narrow=True)
    evaluation = self.world.log_arrays([config.evaluation_day], columns, narrow=True)
    if config.distill_unlabelled:
      train = io.append_rows(train, unlabelled_candidates(self.world, config, train))
    logging.info("coarse: %d training rows (days %s), %d evaluation rows (day %d)",
                 len(train[LABEL]), config.days, len(evaluation[LABEL]),
                 config.evaluation_day)
    return driver.Inputs(train, evaluation)

  def build_model(self, inputs: driver.Inputs):
    """The two-tower student and the variant's teacher (see `stages.teachers`)."""
    return teachers.build_model(self.world, self.config, rankers.TWO_TOWER, LABEL,
                                inputs.train, self.out_dir,
                                distill_unlabelled=self.config.distill_unlabelled,
                                validation=inputs.validation)

  def evaluate(self, model, inputs: driver.Inputs) -> Dict[str, Any]:
    true_p = headroom.true_probabilities(self.world, inputs.evaluation, LABEL)
    return training.evaluate_heads(model, inputs.evaluation, LABEL, true_p)

  def export(self, model, facts: Dict[str, Any]) -> None:
    """The user tower as a SavedModel plus every item's vector, precomputed."""
    world = self.world
    path = export.export_serving(model, self.config.stage, world.schema,
                                 os.path.join(self.out_dir, "saved_model"),
                                 extra_meta={**facts, "scale": model.student.scale})
    items = {name: world.items[name].to_numpy() for name in model.student.item_input_names}
    vectors = pipeline.predict(lambda b: model.student.item_vectors(b, training=False), items)
    files.write_npy(os.path.join(path, serving.ITEM_VECTORS), vectors.astype(np.float32))


def unlabelled_candidates(world, config: CoarseConfig, train) -> Dict[str, np.ndarray]:
  """Items the retrieval model returns for training requests but the log never showed.

  Their features (cross features included) come from the world's point-in-time feature
  service; labels are -1, so they enter only the distillation loss.
  """
  retrieval = serving.load_retrieval(config.model_dir)
  request_ids = np.unique(train["request_id"])
  queries = serving.request_rows(world, config.days, request_ids)
  top_ids = retrieval.top_items(queries, k=100).astype(np.int64)
  # (request, item) pairs as one int64 key over dense request ranks: raw request ids carry
  # the shard in their high bits, so id * n_items could overflow on large worlds.
  n_items = len(world.items)
  distinct, train_rank = id_lookup.dense_ranks(train["request_id"])
  shown = np.unique(id_lookup.pair_keys(train_rank, train["item_id"], n_items))
  request_rank = id_lookup.lookup_rows(distinct, request_ids)
  keys = id_lookup.pair_keys(np.repeat(request_rank[:, None], top_ids.shape[1], 1), top_ids,
                             n_items)
  unseen = ~id_lookup.find_rows(shown, keys)[1]
  per_request = config.unlabelled_per_request
  short = unseen.sum(axis=1) < per_request
  if short.any():
    raise config_lib.StageError(
        f"--unlabelled_per_request={per_request}: {int(short.sum())} training requests have "
        "fewer unshown items among retrieval's top 100; lower it")
  # A seeded uniform choice without replacement among each request's unseen candidates.
  priority = np.where(unseen, np.random.default_rng(config.seed).random(keys.shape), np.inf)
  picks = np.argsort(priority, axis=1, kind="stable")[:, :per_request]
  chosen = np.take_along_axis(top_ids, picks, 1)
  features = world.features.compute(request_ids, chosen)
  return serving.flatten_candidates(world.schema, features, request_ids, chosen,
                                    labels=("click", "conversion"))


def train(config: CoarseConfig) -> Dict[str, Any]:
  """Trains, evaluates and exports one coarse-rank variant; returns its metrics."""
  return driver.train(CoarseTask, config)


def run() -> None:
  driver.run(CoarseTask, "stages.coarse")


if __name__ == "__main__":
  run()
