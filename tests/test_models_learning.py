"""Learning: a PFD teacher beats the baseline student, and so does the PFD student it teaches.

Slow tests train small coarse-stage models (two-tower student) on a synthetic world with a
planted privileged signal and on a freshly generated 'tiny' world, evaluating AUC on held-out
rows. Everything is seeded and op determinism is on, so the figures are reproducible.
"""

import numpy as np
import pytest
import tensorflow as tf

import data
from data import generate
import models
from models import optimizers
from models import testing

WIDTHS = (64, 32)


def _fit_and_evaluate(schema, train, held_out, kind, seed, epochs=2):
  """(student AUC, teacher AUC or None) of a coarse two-tower model after `epochs`."""
  tf.config.experimental.enable_op_determinism()
  tf.keras.utils.set_random_seed(seed)
  spec = models.DistillationSpec(teacher_kind=kind, architecture="two_tower", label="click",
                                 widths=WIDTHS, embedding_dim=8, distill_weight=0.5)
  model = models.build_distillation(schema, "coarse", spec)
  model.compile(optimizer=optimizers.make_optimizer("adam", 0.003))
  model.fit(models.make_dataset(train, 256, schema=schema, seed=seed), epochs=epochs, verbose=0)
  logs = model.evaluate(models.make_dataset(held_out, 4096, schema=schema, shuffle=False),
                        return_dict=True, verbose=0)
  return logs["student_auc"], logs.get("teacher_auc")


def test_training_is_reproducible_with_the_same_seed():
  schema = testing.tiny_schema()
  rows = testing.synthetic_log_arrays(schema, 128, seed=0)
  weights = []
  for _ in range(2):
    tf.config.experimental.enable_op_determinism()
    tf.keras.utils.set_random_seed(5)
    spec = models.DistillationSpec(teacher_kind="pfd", architecture="two_tower", widths=(8,),
                                   embedding_dim=4)
    model = models.build_distillation(schema, "coarse", spec)
    model.compile(optimizer=optimizers.make_optimizer("adam", 0.01))
    model.fit(models.make_dataset(rows, 64, schema=schema, seed=5), verbose=0)
    weights.append([v.numpy() for v in model.trainable_variables])
  for a, b in zip(*weights):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_pfd_teacher_and_student_beat_baseline_on_planted_signal():
  schema = testing.tiny_schema()
  train = testing.synthetic_log_arrays(schema, 20_000, seed=0)
  held_out = testing.synthetic_log_arrays(schema, 10_000, seed=1)
  baseline, _ = _fit_and_evaluate(schema, train, held_out, "baseline", seed=0)
  student, teacher = _fit_and_evaluate(schema, train, held_out, "pfd", seed=0)
  assert teacher > baseline + 0.1, (teacher, baseline)
  assert student > baseline + 0.01, (student, baseline)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
  world_dir = str(tmp_path_factory.mktemp("worlds") / "tiny")
  generate.generate(world_dir, data.preset("tiny"))
  return data.load(world_dir)


@pytest.mark.slow
def test_pfd_teacher_and_student_beat_baseline_on_tiny_world(tiny_world):
  train, held_out = tiny_world.log_arrays([1, 2, 3]), tiny_world.log_arrays([4])
  results = {kind: [_fit_and_evaluate(tiny_world.schema, train, held_out, kind, seed)
                    for seed in (0, 1)] for kind in ("baseline", "pfd")}
  baseline = np.mean([s for s, _ in results["baseline"]])
  student = np.mean([s for s, _ in results["pfd"]])
  teacher = np.mean([t for _, t in results["pfd"]])
  assert teacher > baseline + 0.02, results
  assert student > baseline, results
