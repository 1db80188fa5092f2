"""The per-target burst detector on hand-built follow streams."""

from __future__ import annotations

import random

from followers.burst import BurstDetector
from followers.findings import AccountFlag, TargetFlag
from tests.followers.conftest import DAY, T0, ev


def _organic(det: BurstDetector, rng: random.Random, start: float, end: float, targets: int = 300) -> None:
    """Background traffic: many targets, followers of mostly low risk (a few young ones)."""
    ts = start
    i = 0
    while ts < end:
        ts += rng.expovariate(1 / 20.0)
        risk = 1.5 if rng.random() < 0.05 else (0.5 if rng.random() < 0.2 else 0.0)
        det.observe(ev(ts, f"h{i}", f"t{int(rng.paretovariate(1.0)) % targets}"), risk)
        i += 1


def test_order_of_risky_accounts_is_flagged_within_five_minutes() -> None:
    """60 risky accounts following one small target within 3 minutes flag it, with its members,
    less than 5 minutes after the order started; the share of fake-looking followers is reported."""
    rng = random.Random(1)
    det = BurstDetector()
    _organic(det, rng, T0, T0 + 2 * DAY)
    start = T0 + 2 * DAY + 60
    for i in range(40):  # the target's own quiet baseline
        det.observe(ev(T0 + i * 4000, f"fan{i}", "small"), 0.0)
    findings = []
    for i in range(60):
        findings += det.observe(ev(start + i * 3, f"bot{i}", "small"), 2.5)
    flags = [f for f in findings if isinstance(f, TargetFlag)]
    assert len(flags) == 1
    flag = flags[0]
    assert flag.target == "small" and flag.ts - start <= 300 and flag.fake_share > 0.9
    members = {f.actor for f in findings if isinstance(f, AccountFlag)}
    assert members == {f"bot{i}" for i in range(60)}


def test_viral_spike_of_ordinary_followers_is_not_a_burst() -> None:
    """1000 followers in 10 minutes drawn like everyone's followers (including 10 % brand-new
    accounts) are a volume spike, not a burst of risky followers: no flag."""
    rng = random.Random(2)
    det = BurstDetector()
    _organic(det, rng, T0, T0 + 2 * DAY)
    findings = []
    start = T0 + 2 * DAY
    for i in range(1000):
        risk = 1.5 if rng.random() < 0.1 else (0.5 if rng.random() < 0.2 else 0.0)
        findings += det.observe(ev(start + i * 0.6, f"v{i}", "viral"), risk)
    assert findings == []


def test_target_whose_usual_followers_are_young_is_judged_against_its_own_baseline() -> None:
    """An account that new users always follow (onboarding) gets risky-looking followers every
    day; its own baseline absorbs that, so the same rate on day three is not a burst."""
    rng = random.Random(3)
    det = BurstDetector()
    findings = []
    for day in range(3):
        _organic(det, rng, T0 + day * DAY, T0 + (day + 1) * DAY)
        for i in range(300):
            findings += det.observe(ev(T0 + day * DAY + i * 280, f"new{day}-{i}", "welcome"), 1.5)
    assert not any(isinstance(f, TargetFlag) for f in findings if f.ts >= T0 + 2 * DAY)


def test_attack_does_not_become_the_baseline_while_flagged() -> None:
    """After a flag the target's baseline is frozen: when the order resumes most of a day later,
    its followers are still labelled; a lone risky follower once the surge is over is not (the
    flag alone does not label a target's later followers)."""
    rng = random.Random(4)
    det = BurstDetector()
    _organic(det, rng, T0, T0 + DAY)
    start = T0 + DAY
    for i in range(50):
        det.observe(ev(start + i * 5, f"bot{i}", "small"), 2.5)
    assert det.targets.get("small") is not None and det.targets.get("small").flag_until > start  # type: ignore[union-attr]
    lone = det.observe(ev(start + 0.5 * DAY, "lone", "small"), 2.5)
    assert not [f for f in lone if isinstance(f, AccountFlag)]
    later = []
    for i in range(20):
        later += det.observe(ev(start + 0.9 * DAY + i * 3, f"late{i}", "small"), 2.5)
    assert {f.actor for f in later if isinstance(f, AccountFlag)} >= {f"late{i}" for i in range(10, 20)}


def test_target_state_is_bounded() -> None:
    """Targets are an LRU: a flood of distinct targets cannot grow memory past max_targets."""
    from followers.config import BurstSettings

    det = BurstDetector(BurstSettings(max_targets=100))
    for i in range(5000):
        det.observe(ev(T0 + i, f"a{i}", f"t{i}"), 0.0)
    assert len(det.targets) == 100
