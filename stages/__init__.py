"""One training command per funnel stage: retrieval, coarse (two-tower), fine (CTR, CVR)."""

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
