"""The linear reference trains through the stages' driver on the stage's own rows and inputs."""

import os

import data
from data.plumbing import files
from experiments import reference
from models import distillation
from models import linear
from stages import catalogue
from stages import config as config_lib
from stages import fine


def test_reference_scores_the_same_eval_rows_as_the_stage_and_exports_nothing(tiny_world_dir,
                                                                             tmp_path):
  base = config_lib.TrainConfig(world_dir=tiny_world_dir, model_dir=str(tmp_path),
                                batch_size=512, max_steps=10, hidden_units=(16,),
                                embedding_dim=4, min_validation_positives=10)
  result = reference.train("fine_ctr", base)
  dnn = fine.train(catalogue.FINE_CTR.make_config(base))
  out_dir = os.path.join(str(tmp_path), "reference", "fine_ctr")
  assert files.read_json(os.path.join(out_dir, "metrics.json"))["student"] == linear.LINEAR
  assert not os.path.exists(os.path.join(out_dir, "saved_model"))
  for key in ("n_eval", "n_train", "n_validation", "ceiling_auc", "ceiling_eauc"):
    assert result[key] == dnn[key]
  assert "eauc" in result and "learning_curve" in result


def test_reference_reads_exactly_the_students_serving_features(tiny_world_dir, tmp_path):
  world = data.load(tiny_world_dir)
  base = config_lib.TrainConfig(world_dir=tiny_world_dir, model_dir=str(tmp_path))
  for stage in reference.STAGES:
    config = reference.config_for(stage, base)
    assert config.stage == stage and config.variant == distillation.BASELINE
    task = reference.reference_task(catalogue.stage(stage).task_class())(world, config,
                                                                         str(tmp_path))
    model = task.build_model(None)
    expected = [f.name for f in distillation.student_features(world.schema, stage)]
    assert [f.name for f in model.student.input_features] == expected
