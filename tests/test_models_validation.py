"""Early stopping within the epoch: it stops an overfitting run and keeps the best weights."""

import numpy as np
import tensorflow as tf

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
from models import distillation
from models import pipeline
from models import testing
from models import validation


def _model(schema):
  student = distillation.build_student(schema, "fine_ctr", widths=(64, 32), embedding_dim=16)
  model = distillation.DistillationModel(student, None, label="click")
  model.compile(optimizer=tf.keras.optimizers.Adam(0.02))
  return model


def test_stops_an_overfitting_run_and_restores_the_best_check():
  tf.keras.utils.set_random_seed(0)
  schema = testing.tiny_schema()
  train = testing.synthetic_log_arrays(schema, 600, seed=0)  # tiny: memorised fast
  held_out = testing.synthetic_log_arrays(schema, 3000, seed=1)
  model = _model(schema)
  stopping = validation.ValidationStopping(held_out, "click", every_steps=5, patience=3)
  model.fit(pipeline.make_dataset(train, 64, schema=schema, seed=0, epochs=None),
            steps_per_epoch=10, epochs=40, callbacks=[stopping], verbose=0)
  steps = [point["step"] for point in stopping.curve]
  assert steps[-1] < 400, "the run should have stopped early"
  best = min(point["logloss"] for point in stopping.curve)
  assert stopping.best == best
  assert stopping.curve[-1]["logloss"] > best  # it stopped because it got worse
  np.testing.assert_allclose(stopping.evaluate()["logloss"], best, rtol=1e-6)
