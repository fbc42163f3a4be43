"""Tests for models.metrics: each figure against a brute-force definition on small data."""

import itertools
import math

import numpy as np
import pytest

from data.stats import intervals
from data.stats import metrics


def brute_force_auc(labels, scores):
  """Share of (positive, negative) pairs ordered correctly, ties counting one half."""
  positives = scores[labels > 0]
  negatives = scores[labels <= 0]
  wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
             for p in positives for n in negatives)
  return wins / (len(positives) * len(negatives))


def brute_force_tau_b(x, y):
  """Kendall tau-b by enumerating all pairs."""
  concordant = discordant = ties_x = ties_y = 0
  for i, j in itertools.combinations(range(len(x)), 2):
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    if dx == 0 and dy == 0:
      continue
    if dx == 0:
      ties_x += 1
    elif dy == 0:
      ties_y += 1
    elif dx == dy:
      concordant += 1
    else:
      discordant += 1
  return (concordant - discordant) / math.sqrt(
      (concordant + discordant + ties_x) * (concordant + discordant + ties_y))


def test_auc_matches_pairwise_count_with_ties():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 300)
  scores = rng.integers(0, 12, 300).astype(float)  # heavy ties on purpose
  assert metrics.auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores))


def test_auc_is_nan_with_one_class():
  assert math.isnan(metrics.auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_gauc_weights_by_impressions_and_skips_one_class_users():
  rng = np.random.default_rng(1)
  groups = np.repeat([7, 3, 9, 5], [40, 25, 10, 30])
  labels = rng.integers(0, 2, groups.size)
  labels[groups == 9] = 1  # one class: must be skipped
  scores = rng.integers(0, 5, groups.size).astype(float)
  expected_num = expected_den = 0.0
  for group in (7, 3, 5):
    mask = groups == group
    expected_num += mask.sum() * brute_force_auc(labels[mask], scores[mask])
    expected_den += mask.sum()
  result = metrics.grouped_auc(labels, scores, groups)
  assert result.value == pytest.approx(expected_num / expected_den)
  assert result.n_groups == 3
  assert result.n_impressions == 95
  assert metrics.gauc(labels, scores, groups) == result.value


def test_logloss_clips_and_calibration_is_mean_over_rate():
  assert metrics.logloss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log(1 - 1e-7))
  assert metrics.logloss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))
  assert metrics.calibration([1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(2.0)
  assert math.isnan(metrics.calibration([0, 0], [0.1, 0.2]))


def test_ranking_metrics_has_the_keys_stages_write():
  result = metrics.ranking_metrics([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.7], groups=[1, 1, 2, 2])
  assert set(result) >= {"auc", "gauc", "logloss", "calibration", "n"}
  assert result["n"] == 4 and result["gauc_groups"] == 2
  assert result["auc"] == pytest.approx(0.75)
  assert result["gauc"] == pytest.approx(0.5)


def test_recall_and_hit_on_hand_made_requests():
  retrieved = np.array([[1, 2, 3, 4],
                        [5, 6, 7, 8],
                        [9, 9, 10, 11],   # duplicate retrieved id counts once
                        [1, 2, 3, 4]])
  relevant = [np.array([2, 4, 99]), np.array([8]), np.array([9, 9]), np.array([], int)]
  # Row 3 has nothing relevant: left out of both averages.
  assert metrics.recall_at_k(retrieved, relevant, [1, 2, 4]) == pytest.approx(
      {1: (0 + 0 + 1) / 3, 2: (1 / 3 + 0 + 1) / 3, 4: (2 / 3 + 1 + 1) / 3})
  assert metrics.hit_at_k(retrieved, relevant, [1, 2, 4]) == pytest.approx(
      {1: 1 / 3, 2: 2 / 3, 4: 1.0})
  per_request = metrics.per_request_recall_at_k(retrieved, relevant, 4)
  assert math.isnan(per_request[3])


def test_recall_accepts_a_ragged_values_and_row_splits_form():
  class Ragged:
    values = np.array([2, 4, 8])
    row_splits = np.array([0, 2, 3])
  retrieved = np.array([[1, 2], [8, 5]])
  assert metrics.recall_at_k(retrieved, Ragged(), 2) == {2: pytest.approx(0.75)}


def test_topk_overlap_counts_reference_ids_kept_and_ignores_padding():
  kept = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
  reference = np.array([[3, 1], [6, 9], [-1, -1]])
  overlap = metrics.topk_overlap(kept, reference)
  assert overlap[:2] == pytest.approx([1.0, 0.5])
  assert math.isnan(overlap[2])


def test_kendall_tau_matches_brute_force_tau_b_with_ties():
  rng = np.random.default_rng(2)
  a = rng.integers(0, 4, (6, 9)).astype(float)
  b = a + rng.integers(-2, 3, (6, 9))
  taus = metrics.kendall_tau(a, b)
  assert taus == pytest.approx([brute_force_tau_b(x, y) for x, y in zip(a, b)])
  assert metrics.kendall_tau([[1, 2, 3]], [[3, 2, 1]])[0] == pytest.approx(-1.0)
  assert math.isnan(metrics.kendall_tau([[1, 1, 1]], [[1, 2, 3]])[0])


def _pair_sign_tau_b(a, b):
  """The O(c^2) pair-sign formula the replay used before: sum(sa*sb) / sqrt(sum(sa^2)*sum(sb^2))."""
  valid = np.isfinite(a) & np.isfinite(b)
  a, b = a[valid], b[valid]
  sign_a, sign_b = np.sign(a[:, None] - a[None, :]), np.sign(b[:, None] - b[None, :])
  denominator = np.sqrt((sign_a ** 2).sum() * (sign_b ** 2).sum())
  return (sign_a * sign_b).sum() / denominator if denominator > 0 else np.nan


def test_kendall_tau_is_bit_for_bit_the_pair_sign_formula_on_ties_and_padding():
  rng = np.random.default_rng(5)
  a = np.round(rng.normal(size=(40, 120)) * 3)
  b = np.round(a + rng.normal(size=(40, 120)) * 2)
  a[rng.random(a.shape) < 0.1] = np.nan
  expected = np.array([_pair_sign_tau_b(x, y) for x, y in zip(a, b)])
  got = metrics.kendall_tau(a, b)
  assert np.array_equal(got.view(np.int64), expected.view(np.int64))


def test_kendall_tau_drops_non_finite_padding():
  padded = metrics.kendall_tau([[1, 2, 3, np.nan]], [[1, 3, 2, 0]])
  assert padded[0] == pytest.approx(brute_force_tau_b([1, 2, 3], [1, 3, 2]))


def test_bootstrap_ci_covers_true_mean_and_is_deterministic_under_a_seed():
  rng = np.random.default_rng(3)
  values = rng.normal(5.0, 1.0, 400)
  estimate, lo, hi = intervals.bootstrap_ci(values, n_boot=500, seed=7)
  assert lo < 5.0 < hi and lo < estimate < hi
  assert hi - lo == pytest.approx(2 * 1.96 / math.sqrt(400), rel=0.25)
  assert intervals.bootstrap_ci(values, n_boot=500, seed=7) == (estimate, lo, hi)
  median_ci = intervals.bootstrap_ci(values, stat=np.median, n_boot=200, seed=1)
  assert median_ci[1] < 5.0 < median_ci[2]


def test_bootstrap_over_groups_widens_ci_for_correlated_rows():
  rng = np.random.default_rng(4)
  users = np.repeat(np.arange(50), 20)
  values = rng.normal(0, 1, 50)[users] + rng.normal(0, 0.1, users.size)
  _, lo_rows, hi_rows = intervals.bootstrap_ci(values, n_boot=300)
  _, lo_users, hi_users = intervals.bootstrap_ci(values, n_boot=300, groups=users)
  assert hi_users - lo_users > 2 * (hi_rows - lo_rows)


def test_paired_bootstrap_delta_recovers_planted_shift():
  rng = np.random.default_rng(5)
  baseline = rng.exponential(1.0, 500)
  treatment = baseline * 1.1 + rng.normal(0, 0.01, 500)
  result = intervals.paired_bootstrap_delta(baseline, treatment, n_boot=500)
  assert result.delta_lo < result.delta < result.delta_hi
  assert result.rel_lo < 0.1 < result.rel_hi and result.rel_lo > 0.05
  unpaired = intervals.independent_bootstrap_delta(baseline, treatment, n_boot=500)
  assert unpaired.delta == pytest.approx(result.delta)
  assert unpaired.delta_hi - unpaired.delta_lo > result.delta_hi - result.delta_lo


def test_ratio_of_sums_with_denominators():
  estimate, _, _ = intervals.bootstrap_ci([1.0, 2.0, np.nan], denominators=[2.0, 2.0, 1.0])
  assert estimate == pytest.approx(0.75)


def test_mean_ci_over_seeds_uses_student_t():
  mean, half_width = intervals.mean_ci_over_seeds([1.0, 2.0, 3.0])
  assert mean == 2.0
  assert half_width == pytest.approx(4.3027 * 1.0 / math.sqrt(3), rel=1e-4)
  assert math.isnan(intervals.mean_ci_over_seeds([1.0])[1])
  assert intervals.t_critical_95(1) == pytest.approx(12.706, abs=1e-3)
  assert intervals.t_critical_95(10) == pytest.approx(2.228, abs=1e-3)
  assert intervals.t_critical_95(31) == pytest.approx(2.0395, abs=2e-4)
  assert intervals.t_critical_95(120) == pytest.approx(1.9799, abs=2e-4)


@pytest.mark.parametrize("module", [metrics, intervals])
def test_statistics_modules_import_only_numpy_scipy_and_the_standard_library(module):
  import ast
  tree = ast.parse(open(module.__file__).read())
  imported = {alias.name.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.Import) for alias in node.names}
  imported |= {node.module.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom)}
  assert imported <= {"math", "typing", "numpy", "scipy"}


def test_metrics_refuse_unlabelled_rows():
  with pytest.raises(ValueError, match="unlabelled"):
    metrics.auc([1, 0, -1], [0.9, 0.1, 0.5])
  with pytest.raises(ValueError, match="unlabelled"):
    metrics.ranking_metrics(np.array([1.0, 0.0, -1.0]), np.array([0.9, 0.1, 0.5]))


def test_importing_metrics_does_not_load_tensorflow():
  import subprocess
  import sys
  code = "import sys, data.stats.metrics, data.stats.intervals; print('tensorflow' in sys.modules)"
  output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()
  assert output == "False"


def _brute_force_eauc(p, scores):
  """The definition: every row once as a positive (weight p), once as a negative (1 - p)."""
  numerator = denominator = 0.0
  for i in range(len(p)):
    for j in range(len(p)):
      weight = p[i] * (1 - p[j])
      denominator += weight
      numerator += weight * (1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j]
                             else 0.0)
  return numerator / denominator


def test_eauc_equals_the_brute_force_definition_with_ties():
  rng = np.random.default_rng(3)
  p = rng.random(40)
  scores = np.round(rng.random(40), 1)  # many ties
  assert metrics.eauc(p, scores) == pytest.approx(_brute_force_eauc(p, scores), abs=1e-12)


def test_eauc_of_the_truth_beats_noise_and_degenerate_cases_are_nan():
  rng = np.random.default_rng(0)
  p = rng.beta(1, 10, 5000)
  assert metrics.eauc(p, p) > metrics.eauc(p, p + rng.normal(0, 0.05, p.size)) > 0.5
  assert metrics.eauc(p, -p) < 0.5
  assert math.isnan(metrics.eauc(np.zeros(3), [1, 2, 3]))
  with pytest.raises(ValueError, match="\\[0, 1\\]"):
    metrics.eauc([0.5, 1.5], [1, 2])


def test_eauc_with_binary_probabilities_is_the_auc():
  labels = np.array([1, 0, 1, 0, 0, 1])
  scores = np.array([0.9, 0.2, 0.4, 0.4, 0.1, 0.3])
  assert metrics.eauc(labels.astype(float), scores) == pytest.approx(metrics.auc(labels, scores))


def test_auc_replicates_match_the_auc_of_each_explicit_user_resample():
  from data.stats import intervals
  rng = np.random.default_rng(4)
  n = 800
  users = rng.integers(0, 90, n)
  labels = (rng.random(n) < 0.2).astype(float)
  scores = np.round(rng.normal(size=n) + labels, 1)  # ties included
  p = rng.random(n)
  point, replicates = intervals.auc_replicates([scores, -scores], labels, groups=users,
                                               n_boot=3, seed=11)
  assert point[0] == pytest.approx(metrics.auc(labels, scores))
  assert point[1] == pytest.approx(metrics.auc(labels, -scores))
  eauc_point, _ = intervals.auc_replicates([scores], p, n_boot=1)
  assert eauc_point[0] == pytest.approx(metrics.eauc(p, scores))
  # Replay the same draws: each replicate is the AUC of the resampled users' rows.
  draws = np.random.default_rng(11)
  _, cluster = np.unique(users, return_inverse=True)
  for replicate in range(3):
    picks = draws.integers(0, cluster.max() + 1, size=(1, cluster.max() + 1))[0]
    rows = np.concatenate([np.flatnonzero(cluster == c) for c in picks])
    assert replicates[replicate, 0] == pytest.approx(metrics.auc(labels[rows], scores[rows]))
