"""Shared fixtures: worlds generated once per test session."""

import pytest

from data import config as config_lib
from data import generate
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
