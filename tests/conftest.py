"""Shared fixtures: worlds generated once per test session."""

import pytest

from data import generate
from data.world import config as config_lib
import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)


@pytest.fixture(scope="session")
def tiny_world_dir(tmp_path_factory):
  """The `tiny` preset, seed 0: small enough for brute-force checks and fast training."""
  path = str(tmp_path_factory.mktemp("worlds") / "tiny")
  generate.generate(path, config_lib.preset("tiny", seed=0))
  return path


@pytest.fixture(scope="session")
def small_world_dir(tmp_path_factory):
  """The `small` preset, seed 0 (the demo's world): for tests marked slow."""
  path = str(tmp_path_factory.mktemp("worlds") / "small")
  generate.generate(path, config_lib.preset("small", seed=0))
  return path


@pytest.fixture(scope="session")
def tiny_models_root(tiny_world_dir, tmp_path_factory):
  """Trained tiny models (two steps each: what is checked is their identity, not their skill):
  ROOT/funnel holds every export a replay needs (retrieval, fine CTR baseline, fine CVR pfd,
  coarse pfd_md taught by that fine CTR), ROOT/late a fine CTR trained on days 2-4 (eval 1),
  a teacher that would leak day 4. For tests marked slow (about a minute)."""
  from stages import coarse
  from stages import config as stage_config
  from stages import fine
  from stages import retrieval
  root = tmp_path_factory.mktemp("trained")
  settings = dict(world_dir=tiny_world_dir, hidden_units=(8,), embedding_dim=4, batch_size=512,
                  max_steps=2, validation_fraction=0.0, checkpoint_every=1000)
  funnel = str(root / "funnel")
  retrieval.train(stage_config.RetrievalConfig(model_dir=funnel, export_k=100, **settings))
  fine.train(stage_config.FineConfig(model_dir=funnel, task="ctr", **settings))
  fine.train(stage_config.FineConfig(model_dir=funnel, task="cvr", variant="pfd", **settings))
  coarse.train(stage_config.CoarseConfig(model_dir=funnel, variant="pfd_md", **settings))
  fine.train(stage_config.FineConfig(model_dir=str(root / "late"), task="ctr",
                                     train_days=(2, 3, 4), eval_day=1, **settings))
  return str(root)
