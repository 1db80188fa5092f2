"""Tail bounds and Benjamini-Hochberg: known answers and the conservative direction."""

from __future__ import annotations

import math

from scipy import stats

from followers.stats import bernstein_log_sf, bh_cutoff, binomial_log_sf, poisson_log_sf


def test_poisson_bound_is_an_upper_bound_on_the_exact_tail() -> None:
    """The Chernoff bound never claims more significance than the exact Poisson tail."""
    for mu in (0.5, 2.0, 10.0, 100.0):
        for k in (int(mu) + 1, int(mu * 2) + 1, int(mu * 5) + 3):
            exact = stats.poisson.logsf(k - 1, mu)
            assert poisson_log_sf(k, mu) >= exact - 1e-9


def test_poisson_bound_is_zero_without_excess() -> None:
    """No excess over the mean: log p bound is 0 (p <= 1)."""
    assert poisson_log_sf(3, 5.0) == 0.0
    assert poisson_log_sf(0, 0.0) == 0.0


def test_bernstein_bound_dominates_a_simulated_tail() -> None:
    """Bernstein is conservative for a bounded variable (checked against Binomial tails)."""
    n, p = 200, 0.1
    var = p * (1 - p)
    for k in (30, 40, 60):
        exact = stats.binom.logsf(k - 1, n, p)
        assert bernstein_log_sf(k - n * p, n, var, 1 - p) >= exact


def test_bh_known_answer_and_empty() -> None:
    """BH at q=0.05 over (0.001, 0.008, 0.039, 0.041, 0.6) rejects the first two."""
    logs = [math.log(x) for x in (0.001, 0.008, 0.039, 0.041, 0.6)]
    assert math.isclose(math.exp(bh_cutoff(logs, 0.05)), 0.008)
    assert bh_cutoff([], 0.05) == -math.inf
    assert bh_cutoff([math.log(0.5)], 0.05) == -math.inf


def test_binomial_bound_is_an_upper_bound_on_the_exact_tail() -> None:
    """The Chernoff (KL) bound never claims more significance than the exact binomial tail."""
    for n in (10, 50, 300):
        for p in (0.05, 0.3, 0.6):
            for k in range(int(n * p) + 1, n + 1, max(1, n // 15)):
                exact = stats.binom.logsf(k - 1, n, p)
                assert binomial_log_sf(k, n, p) >= exact - 1e-9, (n, p, k)


def test_binomial_bound_is_zero_without_excess_and_handles_the_edges() -> None:
    """k <= n*p is no evidence; k == n and p near 0 or 1 stay finite."""
    assert binomial_log_sf(3, 10, 0.3) == 0.0
    assert binomial_log_sf(0, 0, 0.5) == 0.0
    assert math.isfinite(binomial_log_sf(10, 10, 1e-12)) and binomial_log_sf(10, 10, 1e-12) < -100
    assert binomial_log_sf(10, 10, 1.0) == 0.0
