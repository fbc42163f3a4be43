"""Shared helpers for the data tests: cached tiny worlds, a numpy logistic regression, AUC.

Worlds are generated once per test session per config (cache below), under
tmp_path_factory, so the whole data test set stays fast on the tiny preset.
"""

import os
from typing import Dict, Tuple

import numpy as np
import pandas as pd

import data
from data import generate

_WORLDS: Dict[Tuple, str] = {}


def cached_tiny_world(tmp_path_factory, **overrides) -> str:
  """Directory of a tiny world with `overrides`, generated once per session."""
  key = tuple(sorted(overrides.items()))
  if key not in _WORLDS:
    world_dir = str(tmp_path_factory.mktemp("world"))
    generate.generate(world_dir, data.preset("tiny", **overrides))
    _WORLDS[key] = world_dir
  return _WORLDS[key]


def world_files(world_dir: str) -> Dict[str, bytes]:
  """Every file of a directory tree, relative path -> bytes."""
  out = {}
  for root, _, files in os.walk(world_dir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, world_dir)] = f.read()
  return out


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3,
                 iterations: int = 50) -> np.ndarray:
  """Logistic regression by Newton/IRLS; x should include an intercept column."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  w = np.zeros(x.shape[1])
  for _ in range(iterations):
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    gradient = x.T @ (p - y) + ridge * w
    hessian = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(x.shape[1])
    step = np.linalg.solve(hessian, gradient)
    w -= step
    if np.abs(step).max() < 1e-8:
      break
  return w


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve (Mann-Whitney, ties averaged)."""
  labels = np.asarray(labels) > 0
  ranks = pd.Series(np.asarray(scores, np.float64)).rank().to_numpy()
  n_pos, n_neg = labels.sum(), (~labels).sum()
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def design(arrays: Dict[str, np.ndarray], numeric=(), categorical=()) -> np.ndarray:
  """Intercept + log1p(numeric) + one-hot(categorical) design matrix."""
  n = len(next(iter(arrays.values())))
  columns = [np.ones(n)]
  for name in numeric:
    columns.append(np.log1p(arrays[name].astype(np.float64)))
  for name in categorical:
    values = arrays[name].astype(np.int64)
    for level in np.unique(values)[1:]:
      columns.append((values == level).astype(np.float64))
  return np.stack(columns, axis=1)


def fitted_auc(arrays, label: str, numeric=(), categorical=(), rows=None) -> float:
  """In-sample AUC of a logistic regression of `label` on the given features."""
  if rows is not None:
    arrays = {k: v[rows] for k, v in arrays.items()}
  x = design(arrays, numeric, categorical)
  w = fit_logistic(x, arrays[label])
  return auc(arrays[label], x @ w)
