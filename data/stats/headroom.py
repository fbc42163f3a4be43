"""How far a model is from what its world allows: the oracle's view of one evaluation.

Only a simulator can say this. For a set of logged evaluation rows and a model's scores:
  ceiling_auc   AUC of the logged labels when the true probability is the score: no model of
                any inputs ranks these rows better, in expectation;
  eauc          the model's expected AUC (`data.stats.metrics.eauc`): AUC against the label
                distribution, free of label-sampling noise, so small differences show;
  ceiling_eauc  the eAUC of the true probability itself, the eAUC ceiling.
The true probability of a click row is the oracle's P(click) at the logged position; of a
conversion row (a click) it is P(conversion | click), which averages the per-click noise out:
everything about the conversion except that noise, as the CVR ceiling should be.
"""

from typing import Dict, Optional, Protocol

import numpy as np
import numpy.typing as npt

from data.stats import metrics


class _Oracle(Protocol):
  """What is read of a world's oracle (data.world.oracle.Oracle; stats may not import world)."""

  def p_click(self, request_ids: npt.ArrayLike, item_ids: npt.ArrayLike,
              positions: Optional[np.ndarray] = None) -> np.ndarray: ...

  def p_convert(self, request_ids: npt.ArrayLike, item_ids: npt.ArrayLike) -> np.ndarray: ...


class _World(Protocol):
  """What is read of a world (data.world.io.World)."""

  @property
  def oracle(self) -> _Oracle: ...

CLICK = "click"
CONVERSION = "conversion"


def true_probabilities(world: _World, arrays: Dict[str, np.ndarray],
                       label: str) -> Optional[np.ndarray]:
  """The oracle's probability of `label` for each logged row of `arrays` (float64[n]).

  `arrays` holds at least request_id, item_id and, for clicks, position (as `log_arrays`
  returns). For `conversion` the rows must be clicks. None for a world of real logs, which
  has no oracle: its runs report no ceiling and no eAUC.
  """
  if not getattr(world, "has_oracle", True):
    return None
  request_ids = np.asarray(arrays["request_id"], np.int64)
  item_ids = np.asarray(arrays["item_id"], np.int64)
  if label == CLICK:
    return world.oracle.p_click(request_ids, item_ids, np.asarray(arrays["position"]))
  if label == CONVERSION:
    return world.oracle.p_convert(request_ids, item_ids)
  raise ValueError(f"no oracle probability for label {label!r}; expected click or conversion")


def headroom_metrics(labels: npt.ArrayLike, scores: npt.ArrayLike,
                     true_p: npt.ArrayLike) -> Dict[str, float]:
  """ceiling_auc, eauc and ceiling_eauc of one model's scores on logged rows."""
  return {"ceiling_auc": metrics.auc(labels, true_p),
          "eauc": metrics.eauc(true_p, scores),
          "ceiling_eauc": metrics.eauc(true_p, true_p)}
