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


def _quiet_target(det: BurstDetector, target: str, start: float, followers: int = 40) -> float:
    """A target with a slow, steady audience of established, low-risk followers; returns the end."""
    ts = start
    for i in range(followers):
        ts = start + i * 3000
        det.observe(ev(ts, f"{target}-fan{i}", target), 0.0)
    return ts


def test_mildly_risky_order_is_flagged_by_the_share_of_risky_followers() -> None:
    """80 accounts each only mildly risky (0.6: under the mean test's 0.5 excess over a usual 0.3)
    but all of them risky, where the target's usual followers rarely are: the binomial share test
    flags the target; the same volume of usual-looking followers is not flagged."""
    rng = random.Random(5)
    det = BurstDetector()
    _organic(det, rng, T0, T0 + 2 * DAY)
    end = _quiet_target(det, "mild", T0 + 0.5 * DAY)
    findings = []
    for i in range(80):
        findings += det.observe(ev(end + 600 + i * 10, f"m{i}", "mild"), 0.6)
    assert [f.target for f in findings if isinstance(f, TargetFlag)] == ["mild"]
    end = _quiet_target(det, "calm", T0 + 0.5 * DAY)
    usual = []
    for i in range(80):
        usual += det.observe(ev(end + 600 + i * 10, f"c{i}", "calm"), 0.6 if rng.random() < 0.2 else 0.0)
    assert not [f for f in usual if isinstance(f, TargetFlag)]


def test_accounts_without_risk_of_their_own_are_labelled_by_a_large_excess() -> None:
    """An order of 150 on a quiet target where a fifth of the accounts carry no risk at all but
    are seen for the first time: once the excess is established they are labelled with the rest
    (earlier ones included); the target's established fans following in the same window are not."""
    rng = random.Random(6)
    det = BurstDetector()
    _organic(det, rng, T0, T0 + 2 * DAY)
    end = _quiet_target(det, "quiet", T0 + 0.5 * DAY)
    start = end + 3600
    findings = []
    clean = {f"aged{i}" for i in range(0, 150, 5)}
    for i in range(150):
        actor = f"aged{i}" if f"aged{i}" in clean else f"young{i}"
        findings += det.observe(ev(start + i * 6, actor, "quiet"), 0.0 if actor in clean else 1.2, first_seen=True)
        if i % 50 == 25:  # an established fan follows again in the middle of the order
            findings += det.observe(ev(start + i * 6 + 1, f"quiet-fan{i // 50}", "quiet"), 0.0)
    labelled = {f.actor for f in findings if isinstance(f, AccountFlag)}
    assert clean <= labelled
    assert len(labelled - clean) == 120
    assert not {a for a in labelled if "fan" in a}


def test_a_finished_short_order_stops_labelling_even_while_the_day_window_is_high() -> None:
    """After a 10-minute order the daily window stays far above usual for a day, but a risky
    newcomer two hours later is judged on the recent windows: not labelled."""
    rng = random.Random(7)
    det = BurstDetector()
    _organic(det, rng, T0, T0 + 2 * DAY)
    end = _quiet_target(det, "brief", T0 + 0.5 * DAY)
    start = end + 3600
    for i in range(100):
        det.observe(ev(start + i * 6, f"b{i}", "brief"), 2.0, first_seen=True)
    assert det.targets.get("brief").flag_until > start + 7200  # type: ignore[union-attr]
    later = det.observe(ev(start + 7200, "newcomer", "brief"), 2.0, first_seen=True)
    assert not [f for f in later if isinstance(f, AccountFlag)]


def test_a_target_first_seen_during_the_order_does_not_learn_the_order_as_usual() -> None:
    """A target nobody followed before the order: the first partial window (the order's first
    seconds) is not taken as its usual rate, so the order's later zero-risk first-seen accounts
    are still labelled."""
    rng = random.Random(8)
    det = BurstDetector()
    _organic(det, rng, T0, T0 + 2 * DAY)
    start = (int((T0 + 2 * DAY) // 600) + 1) * 600 - 120  # two minutes before a 10-minute boundary
    findings = []
    for i in range(200):
        risk = 0.0 if i % 4 == 0 else 1.2
        findings += det.observe(ev(start + i * 6, f"o{i}", "fresh"), risk, first_seen=True)
    labelled = {f.actor for f in findings if isinstance(f, AccountFlag)}
    assert {f"o{i}" for i in range(100, 200, 4)} <= labelled


def test_a_busy_account_with_a_modest_risky_surge_is_watched_not_reported() -> None:
    """A popular account (a follower a minute, a few of them risky) gets 25 extra risky followers
    in ten minutes — the camouflage an order's accounts add to popular accounts: the window is
    unusual enough to freeze the baseline, but nobody in it is confidently the excess, so no
    target is reported and nobody is labelled; its usual followers keep being ignored."""
    rng = random.Random(9)
    det = BurstDetector()
    _organic(det, rng, T0, T0 + 2 * DAY)
    findings = []
    ts = T0
    for i in range(2 * 24 * 60):  # two days of steady traffic
        ts = T0 + i * 60
        findings += det.observe(ev(ts, f"p{i}", "popular"), 0.6 if rng.random() < 0.1 else 0.0)
    for i in range(25):
        findings += det.observe(ev(ts + 10 + i * 24, f"camo{i}", "popular"), 0.6)
    state = det.targets.get("popular")
    assert state is not None and state.flag_until > ts  # watched: the baseline is frozen
    assert not [f for f in findings if isinstance(f, TargetFlag | AccountFlag)]
