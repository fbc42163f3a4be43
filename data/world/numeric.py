"""The logistic function, shared by the world, the oracle, the stages and the replay."""

import numpy as np
import numpy.typing as npt


def sigmoid(x: npt.ArrayLike) -> np.ndarray:
  """Logistic function in float64; the tanh form is stable for any x and fast."""
  return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))
