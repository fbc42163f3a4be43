"""The per-request table a replay writes and compare reads: its columns, declared once.

per_request.parquet has one row per replayed request: its ids, what the page earned and what
the oracle's best page would earn (expected clicks, conversions, GMV), the share of the
oracle's best items surviving each stage, and the coarse-vs-fine agreement on the N1 (nan
outside the cascade sample), plus the item-id lists of the page, the coarse survivors and the
oracle's page.

`REQUEST_METRICS` declares every summary metric that is an aggregate of those columns: the
summary key it becomes, the column it aggregates and how (a mean over requests, nan skipped,
times a scale; or a ratio of two column sums). The replay writes summary.json with
`summary_metrics`; compare bootstraps the same definitions over requests or users, so the two
cannot disagree on what a metric means.
"""

import dataclasses
import math
from typing import Dict, Optional, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa

from data.stats import metrics as metrics_lib
from experiments import funnel as funnel_lib

OUTCOMES = ("clicks", "conversions", "gmv")
ID_COLUMNS = ("request_id", "user_id")
# Coarse vs fine on the N1 candidates (docs/metrics.md): against the fine ranking score
# (--rank_by, pCTR*pCVR*price by default) and against the fine CTR score alone, the coarse
# student's own objective.
CASCADE_COLUMNS = ("coarse_fine_recall", "kendall_tau", "coarse_fine_ctr_recall",
                   "kendall_tau_ctr")
LIST_COLUMNS = ("page_item_ids", "coarse_item_ids", "oracle_item_ids", "retrieved_item_ids")


@dataclasses.dataclass(frozen=True)
class RequestMetric:
  """A summary metric aggregated from per-request columns.

  Without a denominator: scale * the mean of `column` over the requests where it is not nan.
  With one: sum(column) / sum(denominator) over the requests (a share; scale 1).
  """
  name: str                          # the summary.json metric, e.g. survival/coarse
  column: str                        # the per-request column it aggregates
  denominator: Optional[str] = None  # ratio of sums when set
  scale: float = 1.0

  @property
  def columns(self) -> Tuple[str, ...]:
    return (self.column,) + ((self.denominator,) if self.denominator else ())

  def value(self, frame: pd.DataFrame) -> float:
    """The summary value over a frame of requests."""
    values = frame[self.column].to_numpy(np.float64, na_value=np.nan)
    if self.denominator is None:
      values = values[~np.isnan(values)]
      return self.scale * float(values.sum() / len(values)) if len(values) else math.nan
    total = frame[self.denominator].to_numpy(np.float64).sum()
    return float(values.sum() / total) if total else math.nan

  def arrays(self, frame: pd.DataFrame, suffix: str = ""):
    """(scaled numerators, denominators or None) per row, for a bootstrap over the rows;
    `suffix` picks one side of a joined frame (e.g. '@base')."""
    def column(name):
      return frame[name + suffix].to_numpy(np.float64, na_value=np.nan)
    numerator = column(self.column) * self.scale
    return numerator, (None if self.denominator is None else column(self.denominator))


def _declare() -> Tuple[RequestMetric, ...]:
  metrics = []
  for outcome in OUTCOMES:
    for kind in ("exp", "oracle"):
      metrics.append(RequestMetric(f"online/{kind}_{outcome}_per_1k", f"{kind}_{outcome}",
                                   scale=1000.0))
  metrics += [RequestMetric(f"online/share_of_oracle_{outcome}", f"exp_{outcome}",
                            f"oracle_{outcome}") for outcome in OUTCOMES]
  metrics += [RequestMetric(f"survival/{stage}", f"survival_{stage}")
              for stage in funnel_lib.STAGES]
  metrics += [RequestMetric(f"cascade/{name}", name) for name in CASCADE_COLUMNS]
  return tuple(metrics)


REQUEST_METRICS = _declare()
# Figures that need the world's oracle: unavailable (null, with this reason) on real logs.
ORACLE_ONLY_PREFIXES = ("online/", "survival/")
ORACLE_ONLY_COLUMNS = tuple(c for m in REQUEST_METRICS
                            if m.name.startswith(ORACLE_ONLY_PREFIXES) for c in m.columns)
NO_ORACLE_REASON = "needs the oracle; this world comes from real logs (has_oracle: false)"


def unavailable_without_oracle(metrics: Dict[str, Optional[float]]) -> Dict[str, str]:
  """Nulls the oracle-only figures of `metrics` in place; returns {name: reason}."""
  out = {}
  for name in list(metrics):
    if name.startswith(ORACLE_ONLY_PREFIXES):
      metrics[name] = None  # type: ignore[assignment]
      out[name] = NO_ORACLE_REASON
  return out
METRICS_BY_NAME = {metric.name: metric for metric in REQUEST_METRICS}


def cascade_null_reasons(frame: pd.DataFrame, rank_by: str) -> Dict[str, str]:
  """{name: why it is null} for each cascade figure no sampled request could give."""
  sampled = int(frame["coarse_fine_recall"].notna().sum()) if "coarse_fine_recall" in frame else 0
  reasons = {}
  for name in CASCADE_COLUMNS:
    if name in frame and frame[name].notna().any():
      continue
    if not sampled:
      reasons[f"cascade/{name}"] = "no request was in the cascade sample (--cascade_sample)"
    else:
      fine = ("fine CTR score" if name.endswith("_ctr")
              else f"fine ranking score (--rank_by={rank_by})")
      reasons[f"cascade/{name}"] = (
          f"the coarse score or the {fine} is constant over every sampled request's N1 "
          "candidates (e.g. ranking by price on a world without prices): Kendall tau is "
          "undefined for a constant ranking")
  return reasons


def summary_metrics(frame: pd.DataFrame) -> Dict[str, float]:
  """Every declared metric over the replay's requests, plus how many were in the cascade."""
  out = {metric.name: metric.value(frame) for metric in REQUEST_METRICS}
  out["cascade/n_requests"] = int(frame["kendall_tau"].notna().sum())
  return out


def stage_survival(oracle_ids: np.ndarray, retrieved: np.ndarray, kept: np.ndarray,
                   page: np.ndarray) -> Dict[str, np.ndarray]:
  """Per request: the share of the oracle's best K in the N1, the N2 and on the page."""
  return {"survival_retrieval": metrics_lib.topk_overlap(retrieved, oracle_ids),
          "survival_coarse": metrics_lib.topk_overlap(kept, oracle_ids),
          "survival_fine": metrics_lib.topk_overlap(page, oracle_ids)}


def cascade_agreement(coarse_scores: np.ndarray, fine_scores: Dict[str, np.ndarray],
                      retrieved: np.ndarray, kept: np.ndarray, k: int) -> Dict[str, np.ndarray]:
  """Coarse vs fine on the N1, per request: coarse->fine recall (the share of fine's top k over
  the N1 that coarse keeps in its N2) and Kendall tau between the coarse score and the fine
  one; once against the fine ranking score (`fine_scores["objective"]`) and once against the
  fine CTR score (`fine_scores["ctr"]`), the objective the coarse student is trained on."""
  out = {}
  for suffix, fine in (("", fine_scores["objective"]), ("_ctr", fine_scores["ctr"])):
    fine_top, _ = funnel_lib.top_k_by(fine, retrieved, k)
    out[f"coarse_fine{suffix}_recall"] = metrics_lib.topk_overlap(kept, fine_top)
    out[f"kendall_tau{suffix}"] = metrics_lib.kendall_tau(coarse_scores, fine)
  return out


def build_table(columns: Dict[str, np.ndarray], lists: Dict[str, np.ndarray]) -> pa.Table:
  """The per-request Arrow table: scalar columns in the given order, then id lists."""
  unknown = set(lists) - set(LIST_COLUMNS)
  if unknown:
    raise ValueError(f"undeclared per-request list columns {sorted(unknown)}")
  arrays = {name: pa.array(np.asarray(values)) for name, values in columns.items()}
  arrays.update({name: _list_column(values) for name, values in lists.items()})
  return pa.table(arrays)


def _list_column(matrix: np.ndarray) -> pa.ListArray:
  matrix = np.ascontiguousarray(matrix, dtype=np.int64)
  offsets = np.arange(0, matrix.size + 1, max(matrix.shape[1], 1), dtype=np.int32)
  return pa.ListArray.from_arrays(pa.array(offsets[:matrix.shape[0] + 1]),
                                  pa.array(matrix.reshape(-1)))
