"""One definition of every figure a model or funnel is scored by: ranking, retrieval, cascade.

Stages call these to fill `metrics.json`; `experiments.replay` and `experiments.compare` call
them to score and compare funnels. Keeping a single definition means a number called "GAUC"
or "coarse->fine recall" means the same thing in every table. Pure numpy on purpose (no
TensorFlow; scipy for Kendall's tau), so reading and comparing runs stays light. Confidence
intervals live in `data.stats.intervals`.

Conventions:
  * labels are binary, 1 positive and 0 negative; an unlabelled row (-1, a candidate only a
    teacher scores) is refused: it is neither, and counting it as a negative would bias AUC;
  * per-request ("per-row") functions return one value per row, `nan` where the value is
    undefined, so callers can store them per request and average with `np.nanmean`;
"""

from typing import Any, Dict, Iterable, NamedTuple, Optional, Sequence, Tuple, Union, cast

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats

LOGLOSS_EPSILON = 1e-7

# Relevant ids per row: a sequence of arrays (one per row) or a ragged object with `.values`
# and `.row_splits` (a tf.RaggedTensor, untyped here), hence Any.
RelevantIds = Any

# ---------------------------------------------------------------------------------------------
# Ranking models
# ---------------------------------------------------------------------------------------------


def _positives(labels: npt.ArrayLike) -> np.ndarray:
  """labels > 0 as a flat bool array; refuses unlabelled (negative) labels."""
  labels = np.asarray(labels).reshape(-1)
  if labels.size and labels.min() < 0:
    raise ValueError(f"{int((labels < 0).sum())} evaluation rows are unlabelled (label "
                     f"{labels.min()}); metrics need labels 0 or 1: drop unlabelled rows first")
  return labels > 0


def _average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks of `values`; tied values share the average of their ranks."""
  _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
  upper = np.cumsum(counts)
  return cast(np.ndarray, (upper - (counts - 1) / 2.0)[inverse.reshape(-1)])


def auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
  """Area under the ROC curve: P(score of a random positive > score of a random negative).

  Rank-based (Mann-Whitney), ties count one half. Returns nan if only one class is present.
  """
  positive = _positives(labels)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  n_positive = int(positive.sum())
  n_negative = positive.size - n_positive
  if n_positive == 0 or n_negative == 0:
    return float("nan")
  positive_rank_sum = _average_ranks(scores)[positive].sum()
  return float((positive_rank_sum - n_positive * (n_positive + 1) / 2.0)
               / (n_positive * n_negative))


def eauc(true_probabilities: npt.ArrayLike, scores: npt.ArrayLike) -> float:
  """Expected AUC: each row counts as a positive with weight p and a negative with weight 1-p.

  p is the row's true probability (the oracle's). This is the AUC of `scores` against the
  labels' distribution rather than one draw of them, so it carries no label-sampling noise:
  two models compared on the same rows differ only by how they rank. Equal to the weighted AUC
  of the data set in which every row appears once as a positive (weight p) and once as a
  negative (weight 1-p); ties, a row with itself included, count one half. nan when all p are
  0 or all are 1.
  """
  p = np.asarray(true_probabilities, dtype=np.float64).reshape(-1)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  if p.shape != scores.shape:
    raise ValueError(f"eauc: {p.size} probabilities for {scores.size} scores")
  if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1 or np.isnan(p).any()):
    raise ValueError("eauc: true probabilities must lie in [0, 1]")
  positive_weight, negative_weight = p.sum(), (1.0 - p).sum()
  if positive_weight <= 0 or negative_weight <= 0:
    return float("nan")
  distinct, group = np.unique(scores, return_inverse=True)
  negatives_at = np.bincount(group.reshape(-1), weights=1.0 - p, minlength=distinct.size)
  negatives_below = np.cumsum(negatives_at) - negatives_at
  credit = negatives_below[group] + 0.5 * negatives_at[group]
  return float((p * credit).sum() / (positive_weight * negative_weight))


class GroupedAuc(NamedTuple):
  """GAUC and what it was computed from."""
  value: float  # impression-weighted mean of per-group AUCs (nan if no group qualifies)
  n_groups: int  # groups with both classes, i.e. the groups that count
  n_impressions: int  # impressions in those groups


def per_group_auc(labels: npt.ArrayLike, scores: npt.ArrayLike,
                  groups: npt.ArrayLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """AUC of every group at once (vectorised, no Python loop over groups).

  Returns (group_values, aucs, impressions): the sorted distinct groups, each group's AUC
  (nan when the group has one class only) and its number of impressions.
  """
  positive = _positives(labels)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  group_values, group_index = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
  group_index = group_index.reshape(-1)
  n, n_groups = scores.size, group_values.size
  order = np.lexsort((scores, group_index))
  sorted_groups, sorted_scores = group_index[order], scores[order]
  # A "run" is a block of equal (group, score): its members share the run's average position.
  starts_run = np.ones(n, dtype=bool)
  starts_run[1:] = ((sorted_groups[1:] != sorted_groups[:-1])
                    | (sorted_scores[1:] != sorted_scores[:-1]))
  run_start = np.flatnonzero(starts_run)
  run_end = np.append(run_start[1:], n)
  average_position = ((run_start + run_end - 1) / 2.0)[np.cumsum(starts_run) - 1]
  group_start = np.searchsorted(sorted_groups, sorted_groups, side="left")
  rank_in_group = average_position - group_start + 1.0
  impressions = np.bincount(group_index, minlength=n_groups).astype(np.float64)
  positives = np.bincount(group_index, weights=positive, minlength=n_groups)
  negatives = impressions - positives
  positive_rank_sum = np.bincount(sorted_groups, weights=rank_in_group * positive[order],
                                  minlength=n_groups)
  with np.errstate(divide="ignore", invalid="ignore"):
    aucs = (positive_rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
  aucs[(positives == 0) | (negatives == 0)] = np.nan
  return group_values, aucs, impressions.astype(np.int64)


def grouped_auc(labels: npt.ArrayLike, scores: npt.ArrayLike, groups: npt.ArrayLike) -> GroupedAuc:
  """GAUC: per-user AUC weighted by the user's impressions; one-class users are skipped."""
  _, aucs, impressions = per_group_auc(labels, scores, groups)
  counted = ~np.isnan(aucs)
  if not counted.any():
    return GroupedAuc(float("nan"), 0, 0)
  weights = impressions[counted]
  return GroupedAuc(float(np.average(aucs[counted], weights=weights)),
                    int(counted.sum()), int(weights.sum()))


def gauc(labels: npt.ArrayLike, scores: npt.ArrayLike, groups: npt.ArrayLike) -> float:
  """GAUC value only; see `grouped_auc` for the number of groups that counted."""
  return grouped_auc(labels, scores, groups).value


def logloss(labels: npt.ArrayLike, probs: npt.ArrayLike, epsilon: float = LOGLOSS_EPSILON) -> float:
  """Mean binary cross-entropy, probabilities clipped to [epsilon, 1 - epsilon]."""
  labels = _positives(labels).astype(np.float64)
  probs = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), epsilon, 1.0 - epsilon)
  if labels.size == 0:
    return float("nan")
  return float(-np.mean(labels * np.log(probs) + (1.0 - labels) * np.log1p(-probs)))


def calibration(labels: npt.ArrayLike, probs: npt.ArrayLike) -> float:
  """Mean prediction / observed positive rate: 1 is calibrated, >1 over-predicts."""
  observed_rate = np.mean(_positives(labels)) if np.size(labels) else 0.0
  if observed_rate == 0:
    return float("nan")
  return float(np.mean(np.asarray(probs, dtype=np.float64)) / observed_rate)


def ranking_metrics(labels: npt.ArrayLike, probs: npt.ArrayLike,
                    groups: Optional[npt.ArrayLike] = None) -> Dict[str, float]:
  """Everything a ranking stage reports for one evaluation set, as a JSON-ready dict.

  Keys: auc, gauc, gauc_groups (users that counted), logloss, calibration, n. Without
  `groups`, gauc is nan and gauc_groups 0.
  """
  grouped = (grouped_auc(labels, probs, groups) if groups is not None
             else GroupedAuc(float("nan"), 0, 0))
  return {
      "auc": auc(labels, probs),
      "gauc": grouped.value,
      "gauc_groups": grouped.n_groups,
      "logloss": logloss(labels, probs),
      "calibration": calibration(labels, probs),
      "n": int(np.size(labels)),
  }


# ---------------------------------------------------------------------------------------------
# Retrieval and cascade (rows are requests)
# ---------------------------------------------------------------------------------------------


def _pair_keys(rows: np.ndarray, ids: np.ndarray, low: int, span: int) -> np.ndarray:
  """One int64 key per (row, id) pair, so set membership per row becomes one `np.isin`."""
  return rows.astype(np.int64) * span + (ids.astype(np.int64) - low)


def _ragged_rows(relevant_ids: RelevantIds, n_rows: int) -> Tuple[np.ndarray, np.ndarray]:
  """(row index, id) of every relevant id.

  Accepts a sequence of arrays (one per row) or a ragged object with `.values` and
  `.row_splits` (e.g. `tf.RaggedTensor`, or anything shaped like it).
  """
  if hasattr(relevant_ids, "row_splits"):
    values = np.asarray(relevant_ids.values).reshape(-1)
    lengths = np.diff(np.asarray(relevant_ids.row_splits))
  else:
    per_row = [np.asarray(ids).reshape(-1) for ids in relevant_ids]
    lengths = np.array([ids.size for ids in per_row], dtype=np.int64)
    values = np.concatenate(per_row) if per_row else np.zeros(0, np.int64)
  if lengths.size != n_rows:
    raise ValueError(f"relevant ids have {lengths.size} rows, retrieved ids {n_rows}")
  return np.repeat(np.arange(n_rows), lengths), values.astype(np.int64)


def _relevant_found(retrieved_ids: npt.ArrayLike,
                    relevant_ids: RelevantIds) -> Tuple[np.ndarray, np.ndarray]:
  """(found [n, K] bool, n_relevant [n]): is retrieved_ids[i, j] a new relevant id for row i.

  A retrieved id repeated within a row counts once; relevant ids are deduplicated.
  """
  retrieved = np.asarray(retrieved_ids, dtype=np.int64)
  n_rows, n_cols = retrieved.shape
  relevant_rows, relevant_values = _ragged_rows(relevant_ids, n_rows)
  both = np.concatenate([retrieved.reshape(-1), relevant_values])
  low = int(both.min()) if both.size else 0
  span = (int(both.max()) - low + 1) if both.size else 1
  relevant_keys = np.unique(_pair_keys(relevant_rows, relevant_values, low, span))
  n_relevant = np.bincount(relevant_keys // span, minlength=n_rows)
  retrieved_keys = _pair_keys(np.repeat(np.arange(n_rows), n_cols), retrieved.reshape(-1),
                              low, span)
  first_occurrence = np.zeros(retrieved_keys.size, dtype=bool)
  first_occurrence[np.unique(retrieved_keys, return_index=True)[1]] = True
  found = np.isin(retrieved_keys, relevant_keys) & first_occurrence
  return found.reshape(n_rows, n_cols), n_relevant


def _found_in_top(retrieved_ids: npt.ArrayLike, relevant_ids: RelevantIds,
                  k: int) -> Tuple[np.ndarray, np.ndarray]:
  """(relevant ids found in each row's top k [n], relevant ids per row [n])."""
  found, n_relevant = _relevant_found(retrieved_ids, relevant_ids)
  if not 1 <= k <= found.shape[1]:
    raise ValueError(f"k={k} is outside 1..{found.shape[1]} (the retrieved columns)")
  return found[:, :k].sum(axis=1), n_relevant


def per_request_recall_at_k(retrieved_ids: npt.ArrayLike, relevant_ids: RelevantIds,
                            k: int) -> np.ndarray:
  """Per row: share of its relevant ids found in its top k; nan for rows with none."""
  found, n_relevant = _found_in_top(retrieved_ids, relevant_ids, k)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(n_relevant > 0, found / n_relevant, np.nan)


def per_request_hit_at_k(retrieved_ids: npt.ArrayLike, relevant_ids: RelevantIds,
                         k: int) -> np.ndarray:
  """Per row: 1 if its top k holds at least one relevant id, else 0; nan for rows with none."""
  found, n_relevant = _found_in_top(retrieved_ids, relevant_ids, k)
  return np.where(n_relevant > 0, (found > 0).astype(np.float64), np.nan)


def _as_ks(ks: Union[int, Iterable[int]]) -> Sequence[int]:
  return [int(k) for k in ks] if isinstance(ks, Iterable) else [int(ks)]


def recall_at_k(retrieved_ids: npt.ArrayLike, relevant_ids: RelevantIds,
                ks: Union[int, Iterable[int]]) -> Dict[int, float]:
  """Recall@K for each K in `ks`: {K: value}.

  retrieved_ids: [n, K_max] ids, best first, one row per request.
  relevant_ids: per request, the ids that count as relevant (the eval day's clicked items).
  Per-request recall (found / relevant) is macro-averaged over requests with at least one
  relevant id; requests with none are left out, not counted as zero.
  """
  return {k: float(np.nanmean(per_request_recall_at_k(retrieved_ids, relevant_ids, k)))
          for k in _as_ks(ks)}


def hit_at_k(retrieved_ids: npt.ArrayLike, relevant_ids: RelevantIds,
             ks: Union[int, Iterable[int]]) -> Dict[int, float]:
  """Hit@K for each K in `ks`: share of requests (with >= 1 relevant id) hit in the top K."""
  return {k: float(np.nanmean(per_request_hit_at_k(retrieved_ids, relevant_ids, k)))
          for k in _as_ks(ks)}


def topk_overlap(kept_ids: npt.ArrayLike, reference_top_ids: npt.ArrayLike,
                 pad_id: Optional[int] = -1) -> np.ndarray:
  """Per row: share of the reference top-k ids that the kept set contains.

  Used for coarse->fine recall (kept = coarse top-m, reference = fine top-k over the
  retrieved set) and for funnel survival (kept = a stage's output, reference = the oracle's
  best items). Reference entries equal to `pad_id` are padding and do not count; a row
  without any real reference id is nan.
  """
  kept = np.asarray(kept_ids, dtype=np.int64)
  reference = np.asarray(reference_top_ids, dtype=np.int64)
  if kept.shape[0] != reference.shape[0]:
    raise ValueError(f"kept ids have {kept.shape[0]} rows, reference ids {reference.shape[0]}")
  n_rows = kept.shape[0]
  low = int(min(kept.min(initial=0), reference.min(initial=0)))
  span = int(max(kept.max(initial=0), reference.max(initial=0))) - low + 1
  rows = np.arange(n_rows)[:, None]
  kept_keys = _pair_keys(np.broadcast_to(rows, kept.shape), kept, low, span)
  reference_keys = _pair_keys(np.broadcast_to(rows, reference.shape), reference, low, span)
  real = np.ones(reference.shape, dtype=bool) if pad_id is None else reference != pad_id
  contained = np.isin(reference_keys, kept_keys) & real
  n_real = real.sum(axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(n_real > 0, contained.sum(axis=1) / n_real, np.nan)


def kendall_tau(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
  """Kendall tau-b between a[i] and b[i] for every row i: [n, c] x [n, c] -> [n].

  Tau-b corrects for ties in either ranking. Non-finite entries (padding) drop out of their
  row; a row with fewer than two comparable entries, or constant in a or b, is nan.

  Each row counts its pairs in O(c log c) with scipy's `kendalltau` (Knight's algorithm): the
  replay's cascade compares rankings of 1,000 candidates and more, where counting the c^2 pair
  signs was most of a replay step. scipy divides the exact integer concordant - discordant by
  the square roots of the untied pair counts; that integer is recovered (rounded) and divided
  as the pair-sign formula did, sum(sa * sb) / sqrt(sum(sa^2) * sum(sb^2)), so every value is
  the same float, bit for bit, as before.
  """
  a = np.atleast_2d(np.asarray(a, dtype=np.float64))
  b = np.atleast_2d(np.asarray(b, dtype=np.float64))
  if a.shape != b.shape:
    raise ValueError(f"kendall_tau needs equal shapes, got {a.shape} and {b.shape}")
  taus = np.full(a.shape[0], np.nan)
  valid = np.isfinite(a) & np.isfinite(b)
  for row in range(a.shape[0]):
    x, y = a[row, valid[row]], b[row, valid[row]]
    pairs = len(x) * (len(x) - 1) // 2
    untied_x, untied_y = pairs - _tied_pairs(x), pairs - _tied_pairs(y)
    if untied_x == 0 or untied_y == 0:
      continue  # no comparable pair, or a constant ranking: tau-b is undefined
    tau = scipy_stats.kendalltau(x, y, variant="b").statistic
    difference = np.rint(tau * np.sqrt(untied_x) * np.sqrt(untied_y))  # concordant - discordant
    taus[row] = 2.0 * difference / np.sqrt((2.0 * untied_x) * (2.0 * untied_y))
  return taus


def _tied_pairs(values: np.ndarray) -> int:
  """How many pairs of `values` are equal."""
  _, counts = np.unique(values, return_counts=True)
  return int(np.sum(counts * (counts - 1) // 2))
