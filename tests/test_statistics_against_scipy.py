"""data.stats.intervals and data.stats.metrics checked against scipy, the well-kept reference.

The project computes the t quantile and Kendall's tau-b itself (no scipy at run time); these
tests pin both to scipy.stats where scipy is installed (the `test` extra).
"""

import numpy as np
import pytest

from data.stats import intervals
from data.stats import metrics

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", list(range(1, 41)) + [50, 60, 80, 100, 200, 1000, 10_000])
def test_t_critical_95_matches_scipy_t_ppf(df):
  # The table holds 4 decimals (df <= 30); the expansion above is accurate to ~1e-4.
  assert intervals.t_critical_95(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1.5e-4)


@pytest.mark.parametrize("df", [1.5, 2.7, 9.9, 29.5])
def test_fractional_df_rounds_down_to_a_wider_interval(df):
  assert intervals.t_critical_95(df) >= stats.t.ppf(0.975, df)


def test_kendall_tau_matches_scipy_tau_b_on_rows_with_ties():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 5, (40, 30)).astype(float)  # few distinct values: many ties
  b = a + rng.integers(-2, 3, a.shape)
  b[::4] = rng.normal(size=(10, 30))  # some rows without ties in b
  expected = [stats.kendalltau(row_a, row_b, variant="b").statistic for row_a, row_b in zip(a, b)]
  np.testing.assert_allclose(metrics.kendall_tau(a, b), expected, rtol=1e-12, atol=1e-12)


def test_kendall_tau_drops_padding_like_scipy_on_the_finite_entries():
  rng = np.random.default_rng(1)
  a, b = rng.integers(0, 4, (2, 25)).astype(float)
  padded_a, padded_b = a.copy(), b.copy()
  padded_a[20:] = np.nan
  expected = stats.kendalltau(a[:20], b[:20], variant="b").statistic
  assert metrics.kendall_tau(padded_a[None], padded_b[None])[0] == pytest.approx(expected,
                                                                                 rel=1e-12)

