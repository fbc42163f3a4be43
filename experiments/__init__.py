"""Replay, comparison and paper-reproduction experiments over trained funnels."""

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
