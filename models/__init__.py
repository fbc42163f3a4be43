"""Keras building blocks for the funnel: schema-driven inputs, towers, rankers, distillation.

TensorFlow Recommenders needs Keras 2 (the `tf-keras` package). TensorFlow picks its Keras
implementation when it is first imported, so `TF_USE_LEGACY_KERAS=1` must be in the
environment before that. This is the one place the project sets it: every package that uses
TensorFlow (`models`, `stages`, `experiments`) imports `models` first, and Python runs a
package's `__init__` before any of its modules.
"""

import os as _os
import sys as _sys

_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if "tensorflow" in _sys.modules and _os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "TensorFlow was imported before `models` with TF_USE_LEGACY_KERAS unset; "
        "TFRS needs Keras 2. Import `models` (or any project package) before tensorflow.")

# Public API, loaded on first use (PEP 562) so that `models.metrics`, which is pure numpy,
# can be imported without starting TensorFlow.
_EXPORTS = {
    "models.inputs": ("EmbeddingBank", "FeatureEmbedding", "MissingFeatureError",
                      "VOCABULARY_GROUPS", "vocabulary_group"),
    "models.towers": ("MLP", "Tower"),
    "models.rankers": ("DNNRanker", "TwoTowerScorer", "split_by_side"),
    "models.distillation": ("BASELINE", "LUPI", "MD", "PFD", "PFD_MD", "PRETRAINED",
                            "SIMULTANEOUS", "TEACHER_KINDS", "DistillationModel",
                            "FrozenTeacher", "PrivilegedDistillation", "build_distillation",
                            "build_head", "build_student", "build_teacher",
                            "student_features", "teacher_features"),
    "models.export": ("ServingModel", "export_serving", "load_serving"),
    "models.pipeline": ("make_dataset", "model_columns", "predict", "take_rows"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
  if name not in _WHERE:
    raise AttributeError(f"module 'models' has no attribute {name!r}")
  import importlib
  return getattr(importlib.import_module(_WHERE[name]), name)
