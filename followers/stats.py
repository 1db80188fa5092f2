"""The few statistics the detectors need, as closed-form tail bounds cheap enough for every event.

Each function returns the natural log of an *upper bound* on a p-value (a conservative test: the
true p-value is at most this), so thresholds keep their meaning whatever the generator behind the
data — no fitted distribution, no simulator-tuned constant. ``bh_cutoff`` is Benjamini-Hochberg."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["bernstein_log_sf", "bh_cutoff", "binomial_log_sf", "poisson_log_sf"]


def bernstein_log_sf(excess: float, n: float, variance: float, bound: float) -> float:
    """log P(S - n*mu >= excess) for a sum S of ``n`` independent terms with variance ``variance``
    each and ``X - mu <= bound`` (Bernstein's inequality). 0.0 (p <= 1) when there is no excess.

    Used for "the new followers of this target are riskier than its usual followers": the risk of
    a follower is bounded, so the bound holds for any follower-risk distribution."""
    if excess <= 0 or n <= 0:
        return 0.0
    return -(excess * excess) / (2.0 * (n * variance + bound * excess / 3.0))


def poisson_log_sf(k: float, mu: float) -> float:
    """log P(X >= k) for X ~ Poisson(mu), by the Chernoff bound -(k log(k/mu) - k + mu); 0.0 when
    k <= mu. Used for "more of X than this key's own baseline predicts" (volume, shared networks)."""
    if k <= mu or k <= 0:
        return 0.0
    mu = max(mu, 1e-9)
    return -(k * math.log(k / mu) - k + mu)


def bh_cutoff(log_ps: Sequence[float], q: float) -> float:
    """The Benjamini-Hochberg rejection threshold (as a log p-value) for one family of tests at
    false-discovery rate ``q``: reject every test with log p <= the returned value. ``-inf`` when
    nothing is rejected.

    >>> import math
    >>> round(math.exp(bh_cutoff([math.log(p) for p in (0.001, 0.008, 0.039, 0.041, 0.6)], 0.05)), 3)
    0.008
    """
    m = len(log_ps)
    if m == 0:
        return -math.inf
    log_q_over_m = math.log(q) - math.log(m)
    best = -math.inf
    for rank, log_p in enumerate(sorted(log_ps), 1):
        if log_p <= log_q_over_m + math.log(rank):
            best = log_p
    return best


def binomial_log_sf(k: float, n: float, p: float) -> float:
    """log P(X >= k) for X ~ Binomial(n, p), by the Chernoff bound -n * KL(k/n || p); 0.0 when
    k <= n*p. Used for "a larger share of this target's new followers are risky than its usual
    share": a count test, far more powerful than a bound on the mean when most of the excess is
    a shift in *how many* followers are suspicious rather than *how* suspicious each one is."""
    if n <= 0 or k <= n * p:
        return 0.0
    p = min(max(p, 1e-9), 1.0 - 1e-9)
    x = min(k / n, 1.0)
    kl = x * math.log(x / p) if x > 0 else 0.0
    if x < 1.0:
        kl += (1.0 - x) * math.log((1.0 - x) / (1.0 - p))
    return -n * kl
