"""Account risk features: each one on a small hand-built history, and the explanation."""

from __future__ import annotations

from followers.risk import RiskTracker
from tests.followers.conftest import DAY, T0, ev


def test_fresh_proxy_subnet_is_shared_network_but_steady_carrier_nat_is_not() -> None:
    """30 accounts appearing on a never-seen /24 within minutes score shared_network; a carrier
    NAT that always carries ~30 accounts an hour does not, once its baseline is learned."""
    risk = RiskTracker()
    for hour in range(48):
        for i in range(30):
            risk.observe(ev(T0 + hour * 3600 + i * 100, f"nat{hour}-{i}", "x", prefix="100.64.1.0/24"))
    steady = risk.observe(ev(T0 + 48 * 3600 + 50, "nat-late", "x", prefix="100.64.1.0/24"))
    assert dict(steady.reasons()).get("shared_network", 0.0) == 0.0
    start = T0 + 49 * 3600
    last = None
    for i in range(30):
        last = risk.observe(ev(start + i * 10, f"bot{i}", "x", prefix="192.0.2.0/24"))
    assert last is not None and dict(last.reasons())["shared_network"] == 1.0


def test_young_fast_and_contentless_are_explained() -> None:
    """A minutes-old account with no posts following at once scores young + fast_first_follow +
    contentless, and the evidence names them."""
    risk = RiskTracker()
    score = risk.observe(ev(T0 + 120, "new", "x", created=T0, posts=0))
    reasons = dict(score.reasons())
    assert reasons["young"] > 0.99 and reasons["fast_first_follow"] == 0.5 and reasons["contentless"] == 1.0
    assert "young" in score.evidence()
    old = risk.observe(ev(T0 + 120, "old", "x", created=T0 - 900 * DAY, posts=40))
    assert old.score == 0.0 and old.reasons() == []


def test_unknown_posts_are_not_read_as_zero() -> None:
    """Without a post count (no enrichment) contentless stays 0."""
    score = RiskTracker().observe(ev(T0, "a", "x", created=T0 - 400 * DAY))
    assert dict(score.reasons()).get("contentless") is None


def test_follow_rate_and_churn() -> None:
    """60 follows in an hour scores follow_rate; following and unfollowing the same accounts scores churn."""
    risk = RiskTracker()
    score = None
    for i in range(60):
        risk.observe(ev(T0 + i * 50, "spree", f"t{i}", prefix="10.1.1.0/24"))
        score = risk.observe(ev(T0 + i * 50 + 20, "spree", f"t{i}", action="unfollow", prefix="10.1.1.0/24"))
    assert score is not None
    reasons = dict(score.reasons())
    assert reasons["follow_rate"] > 0.9 and reasons["churn"] == 0.75


def test_account_state_is_bounded() -> None:
    """A million-account attacker cannot grow the tracker past its cap."""
    from followers.config import RiskSettings

    risk = RiskTracker(RiskSettings(max_accounts=100, max_networks=50, max_user_agents=10))
    for i in range(1000):
        risk.observe(ev(T0 + i, f"a{i}", "t", prefix=f"10.{i % 250}.{i // 250}.0/24", ua=f"ua{i}"))
    assert len(risk.accounts) == 100 and len(risk.networks) == 50 and len(risk.user_agents) == 10
