"""Keras building blocks for the funnel: schema-driven inputs, towers, rankers, distillation.

TensorFlow Recommenders needs Keras 2 (the `tf-keras` package). TensorFlow picks its Keras
implementation when it is first imported, so `TF_USE_LEGACY_KERAS=1` must be in the
environment before that. This is the one place the project sets it: every package that uses
TensorFlow (`models`, `stages`, `experiments`) imports `models` first, and Python runs a
package's `__init__` before any of its modules. TensorFlow's start-up notices on a CPU machine
are filtered here too (models/startup.py), unless --verbosity asks for them.
"""

import os as _os
import sys as _sys

from models import startup as _startup  # no TensorFlow in it

_VERBOSE = _startup.verbose_requested(_sys.argv)
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if _VERBOSE else "2")

if "tensorflow" in _sys.modules and _os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "TensorFlow was imported before `models` with TF_USE_LEGACY_KERAS unset; "
        "TFRS needs Keras 2. Import `models` (or any project package) before tensorflow.")

# Quiet by default on CPU (models/startup.py): TensorFlow's load-time CUDA and absl notices
# are kept off stderr, and so is the CUDA probe's, which runs at the first device listing.
with _startup.quiet_start(enabled=not _VERBOSE):
    import tensorflow as _tf
    _tf.config.list_physical_devices()
_startup.quiet_python_loggers(enabled=not _VERBOSE)

# The public API. Importing it starts TensorFlow, after the switch above.
from models.inputs import (VOCABULARY_GROUPS, EmbeddingBank, FeatureEmbedding,  # noqa: E402
                           MissingFeatureError, vocabulary_group)
from models.towers import MLP, Tower  # noqa: E402
from models.rankers import DNNRanker, TwoTowerScorer, split_by_side  # noqa: E402
from models import teacher_kinds  # noqa: E402
from models.distillation import (BASELINE, LUPI, MD, PFD, PFD_MD, PRETRAINED, SELF,  # noqa: E402
                                 SIMULTANEOUS, DistillationModel, DistillationSpec,
                                 FrozenTeacher, PrivilegedDistillation, build_distillation,
                                 build_head, build_student, build_teacher, student_features,
                                 teacher_features)
from models.export import ServingModel, export_serving, load_serving  # noqa: E402
from models.pipeline import make_dataset, model_columns, predict, take_rows  # noqa: E402

__all__ = [
    "VOCABULARY_GROUPS", "EmbeddingBank", "FeatureEmbedding", "MissingFeatureError",
    "vocabulary_group", "MLP", "Tower", "DNNRanker", "TwoTowerScorer", "split_by_side",
    "teacher_kinds", "BASELINE", "LUPI", "MD", "PFD", "PFD_MD", "PRETRAINED", "SELF",
    "SIMULTANEOUS", "DistillationModel", "DistillationSpec", "FrozenTeacher",
    "PrivilegedDistillation", "build_distillation", "build_head", "build_student",
    "build_teacher", "student_features", "teacher_features", "ServingModel", "export_serving",
    "load_serving", "make_dataset", "model_columns", "predict", "take_rows",
]
