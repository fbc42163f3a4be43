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
from typing import Any, Dict, Optional

from absl import logging

from data.stats import headroom
from data.stats import metrics as metrics_lib
from data.world import io
from data.world import numeric
from models import export
from models import pipeline
from models import rankers
from stages import config as config_lib
from stages import driver
from stages import layout
from stages import teachers
from stages import training

FineConfig = config_lib.FineConfig
LABEL = {"ctr": "click", "cvr": "conversion"}
CTR_STAGE = "fine/ctr"  # The CVR run's CTCVR evaluation reads this stage's export.


class FineTask(driver.StageTask[FineConfig]):
  """A fine-rank DNN: CTR over impressions, or CVR over clicked impressions."""
  CONFIG = FineConfig

  def __init__(self, world, config: FineConfig, out_dir: str):
    super().__init__(world, config, out_dir)
    self.label = LABEL[config.task]

  @classmethod
  def upstream(cls, config: FineConfig) -> Dict[str, Optional[str]]:
    """A CVR run's CTCVR figure reads the fine CTR export."""
    if config.task != "cvr":
      return {}
    return {f"{CTR_STAGE}/{config.ctr_variant}":
            layout.export_identity(config.model_dir, CTR_STAGE, config.ctr_variant)}

  def build_inputs(self) -> driver.Inputs:
    """Impressions for CTR, clicked impressions for CVR."""
    config, task = self.config, self.config.task
    columns = io.stage_columns(self.world.schema, config.stage)
    train = self.world.log_arrays(config.days, columns, narrow=True)
    evaluation = self.world.log_arrays([config.evaluation_day], columns, narrow=True)
    if task == "cvr":
      train = pipeline.take_rows(train, train["click"] > 0)
      evaluation = pipeline.take_rows(evaluation, evaluation["click"] > 0)
    for name, arrays in (("training", train), ("evaluation", evaluation)):
      if len(arrays[self.label]) == 0:
        raise config_lib.StageError(f"no {name} rows for --task={task} in the chosen days")
    logging.info("fine %s: %d training rows (days %s), %d evaluation rows (day %d)", task,
                 len(train[self.label]), config.days, len(evaluation[self.label]),
                 config.evaluation_day)
    return driver.Inputs(train, evaluation)

  def build_model(self, inputs: driver.Inputs):
    """The DNN student and, for a distilled variant, its teacher (see `stages.teachers`)."""
    return teachers.build_model(self.world, self.config, rankers.DNN, self.label, inputs.train,
                                self.out_dir, validation=inputs.validation)

  def evaluate(self, model, inputs: driver.Inputs) -> Dict[str, Any]:
    true_p = headroom.true_probabilities(self.world, inputs.evaluation, self.label)
    metrics = training.evaluate_heads(model, inputs.evaluation, self.label, true_p)
    if self.config.task == "cvr":
      metrics.update(self.ctcvr_metrics(model))
    return metrics

  def ctcvr_metrics(self, model) -> Dict[str, Any]:
    """CTCVR AUC on every eval-day impression: pCTR (fine CTR export) x pCVR (this student)."""
    config = self.config
    path = layout.export_path(config.model_dir, CTR_STAGE, config.ctr_variant)
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
      logging.warning("no fine CTR model at %s: CTCVR AUC skipped (train it with "
                      "`python -m stages.fine --task=ctr`)", path)
      return {}
    impressions = self.world.log_arrays([config.evaluation_day])
    p_ctr = export.load_serving(path).predict(impressions)
    p_cvr = numeric.sigmoid(pipeline.head_predictor(model, "student")(impressions))
    return {"ctcvr_auc": metrics_lib.auc(impressions["conversion"], p_ctr * p_cvr),
            "ctcvr_n": int(len(p_cvr))}

  def export(self, model, facts: Dict[str, Any]) -> None:
    export.export_serving(model, self.config.stage, self.world.schema,
                          os.path.join(self.out_dir, "saved_model"), extra_meta=facts)


def train(config: FineConfig) -> Dict[str, Any]:
  """Trains, evaluates and exports one fine-rank model; returns its metrics."""
  return driver.train(FineTask, config)


def run() -> None:
  driver.run(FineTask, "stages.fine")


if __name__ == "__main__":
  run()
