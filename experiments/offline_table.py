"""The offline figures of a replay: each model's AUC, GAUC and eAUC on the replayed day's
logged impressions, declared once, with the scores behind them kept for compare.

The replay scores every logged impression of the day with the coarse student and fine CTR
(label: click) and every clicked one with fine CVR (label: conversion), and keeps those scores
per impression in R/offline_scores.parquet beside the labels and, on a simulated world, the
oracle's probabilities. `OFFLINE_METRICS` declares each summary figure from those columns;
the replay writes the values into summary.json (`summary_metrics`) and compare bootstraps the
same definitions over users (`replicates`, `gauc_parts`; experiments.compare_offline), so the
two cannot disagree on what a figure means. A figure that cannot be computed is null with its
reason (`null_reasons`).
"""

import dataclasses
import math
from typing import Dict, Optional, Tuple

import numpy as np
import pandas as pd

from data.stats import headroom
from data.stats import intervals
from data.stats import metrics as metrics_lib

# (score column, label): what each model is judged on; fine CVR on clicked impressions only.
MODELS = (("coarse", "click"), ("fine_ctr", "click"), ("fine_cvr", "conversion"))
KINDS = ("auc", "gauc", "eauc")
TRUE_P = {"click": "p_click", "conversion": "p_conversion"}


@dataclasses.dataclass(frozen=True)
class OfflineMetric:
  """offline/<model>_<kind>: the model's AUC, GAUC (by user) or eAUC (against the oracle's
  probability) over its rows of the day's logged impressions."""
  model: str
  label: str
  kind: str

  @property
  def name(self) -> str:
    return f"offline/{self.model}_{self.kind}"

  def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
    """The impressions this model is judged on (clicked ones for a conversion model)."""
    keep = np.isfinite(frame[self.model].to_numpy(np.float64))
    if self.label == "conversion":
      keep &= frame["click"].to_numpy() > 0
    return frame[keep]

  def usable(self, frame: Optional[pd.DataFrame]) -> bool:
    needed = [self.model, self.label, "user_id"] + ([TRUE_P[self.label]]
                                                   if self.kind == "eauc" else [])
    return frame is not None and all(column in frame for column in needed)

  def value(self, frame: pd.DataFrame) -> float:
    rows = self.rows(frame)
    labels, scores = rows[self.label].to_numpy(), rows[self.model].to_numpy(np.float64)
    if self.kind == "auc":
      return metrics_lib.auc(labels, scores)
    if self.kind == "gauc":
      return metrics_lib.gauc(labels, scores, rows["user_id"].to_numpy())
    return metrics_lib.eauc(rows[TRUE_P[self.label]].to_numpy(np.float64), scores)


OFFLINE_METRICS = tuple(OfflineMetric(model, label, kind) for model, label in MODELS
                        for kind in KINDS)
METRICS_BY_NAME = {metric.name: metric for metric in OFFLINE_METRICS}


def score_table(world, logs: Dict[str, np.ndarray], scores: Dict[str, np.ndarray]) -> pd.DataFrame:
  """One row per logged impression: ids, labels, each model's score (fine_cvr: NaN on rows
  that were not clicked) and, with an oracle, its probabilities of click and conversion."""
  frame = pd.DataFrame({
      "request_id": np.asarray(logs["request_id"], np.int64),
      "item_id": np.asarray(logs["item_id"], np.int64),
      "user_id": np.asarray(logs["user_id"], np.int64),
      "click": np.asarray(logs["click"], np.int8),
      "conversion": np.asarray(logs["conversion"], np.int8)})
  for name, values in scores.items():
    frame[name] = np.asarray(values, np.float64)
  if getattr(world, "has_oracle", True):
    frame["p_click"] = headroom.true_probabilities(world, logs, headroom.CLICK)
    frame["p_conversion"] = world.oracle.p_convert(frame["request_id"].to_numpy(),
                                                   frame["item_id"].to_numpy())
  return frame


def summary_metrics(frame: pd.DataFrame) -> Dict[str, float]:
  """Every declared offline figure the frame can give (eAUC needs the oracle's columns)."""
  return {metric.name: metric.value(frame) for metric in OFFLINE_METRICS if metric.usable(frame)}


def null_reasons(frame: pd.DataFrame, has_oracle: bool) -> Dict[str, str]:
  """{name: why it is null} for each declared figure the frame cannot give."""
  reasons = {}
  for metric in OFFLINE_METRICS:
    if metric.model not in frame:
      continue  # the funnel has no such model: its caller says why
    if metric.kind == "eauc" and not has_oracle:
      reasons[metric.name] = ("eAUC needs the oracle's probabilities; this world comes from "
                              "real logs (has_oracle: false)")
      continue
    rows = metric.rows(frame)
    labels = rows[metric.label].to_numpy() > 0
    where = (f"the day's {len(rows):,} clicked impressions" if metric.label == "conversion"
             else f"the day's {len(rows):,} logged impressions")
    if not labels.any() or labels.all():
      reasons[metric.name] = (f"{where} hold {'no' if not labels.any() else 'only'} "
                              f"{metric.label}s: an AUC needs both classes")
    elif metric.kind == "gauc" and math.isnan(metric.value(frame)):
      reasons[metric.name] = (f"no user of {where} has both a {metric.label} and a "
                              f"non-{metric.label}: GAUC averages per-user AUCs")
  return reasons


def _auc_weights(metric: OfflineMetric, rows: pd.DataFrame) -> Tuple[np.ndarray, np.ndarray]:
  """(positive, negative) weights of each row: the label for an AUC, the oracle's
  probability for an eAUC."""
  if metric.kind == "eauc":
    p = rows[TRUE_P[metric.label]].to_numpy(np.float64)
    return p, 1.0 - p
  positive = (rows[metric.label].to_numpy() > 0).astype(np.float64)
  return positive, 1.0 - positive


def replicates(metric: OfflineMetric, frames, n_boot: int,
               seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """(point figures [m], bootstrap replicates [n_boot, m]) of an AUC or eAUC figure over m
  `aligned` runs' frames: every replicate resamples the same users for every run, so the
  columns are paired."""
  if metric.kind == "gauc":
    raise ValueError("GAUC is a ratio over users: use gauc_parts with data.stats.intervals")
  rows = [metric.rows(frame) for frame in frames]
  positive, negative = _auc_weights(metric, rows[0])
  return intervals.auc_replicates([r[metric.model].to_numpy(np.float64) for r in rows],
                                  positive, negative, rows[0]["user_id"].to_numpy(), n_boot,
                                  seed)


def gauc_parts(metric: OfflineMetric, frame: pd.DataFrame) -> Tuple[np.ndarray, np.ndarray]:
  """GAUC as a ratio of sums over users with both classes: (impressions * AUC, impressions)
  per user, sorted by user id (`data.stats.intervals` bootstraps it like any per-request ratio)."""
  rows = metric.rows(frame)
  _, aucs, impressions = metrics_lib.per_group_auc(
      rows[metric.label].to_numpy(), rows[metric.model].to_numpy(np.float64),
      rows["user_id"].to_numpy())
  counted = ~np.isnan(aucs)
  return (aucs * impressions)[counted], impressions[counted].astype(np.float64)


def aligned(base: pd.DataFrame, variant: pd.DataFrame) -> bool:
  """Whether two runs scored the same impressions in the same order (same world and day)."""
  return (len(base) == len(variant)
          and np.array_equal(base["request_id"].to_numpy(), variant["request_id"].to_numpy())
          and np.array_equal(base["item_id"].to_numpy(), variant["item_id"].to_numpy()))
