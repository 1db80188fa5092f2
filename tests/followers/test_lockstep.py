"""Lockstep cohorts on hand-built graphs: synchronized pools found, coincidences not."""

from __future__ import annotations

import random

from followers.findings import AccountFlag, CohortFound
from followers.lockstep import LockstepDetector
from tests.followers.conftest import DAY, T0, ev


def _noise(det: LockstepDetector, rng: random.Random, start: float, end: float, actors: int = 3000) -> list:
    out = []
    ts = start
    while ts < end:
        ts += rng.expovariate(1 / 5.0)
        actor = f"h{rng.randrange(actors)}"
        out += det.observe(ev(ts, actor, f"t{int(rng.paretovariate(1.2)) % 500}",
                              created=T0 - rng.uniform(30, 3000) * DAY), actors)
    return out


def test_pool_following_the_same_targets_in_the_same_buckets_is_one_cohort() -> None:
    """40 accounts that follow T1 then T2 within the same 15-minute buckets, among 3000 honest
    accounts, form one cohort containing exactly them; each is flagged once."""
    rng = random.Random(5)
    det = LockstepDetector()
    found = _noise(det, rng, T0, T0 + DAY)
    start = T0 + DAY
    for target, offset in (("bought1", 0.0), ("bought2", 3600.0)):
        for i in range(40):
            found += det.observe(ev(start + offset + rng.uniform(0, 600), f"pool{i}", target,
                                    created=T0 - rng.uniform(30, 3000) * DAY), 3000)
    found += _noise(det, rng, start + 2 * 3600, start + 6 * 3600)
    cohorts = [f for f in found if isinstance(f, CohortFound)]
    assert cohorts, "no cohort"
    last = cohorts[-1]
    assert set(last.accounts) <= {f"pool{i}" for i in range(40)} and len(last.accounts) >= 30
    assert {"bought1", "bought2"} <= set(last.targets)
    flagged = [f.actor for f in found if isinstance(f, AccountFlag)]
    assert len(flagged) == len(set(flagged)) and all(a.startswith("pool") for a in flagged)


def test_honest_noise_alone_forms_no_cohort() -> None:
    """Independent accounts following popular targets at random times: no cohort."""
    det = LockstepDetector()
    assert _noise(det, random.Random(6), T0, T0 + 2 * DAY) == []


def test_accounts_registered_in_one_batch_and_aged_are_a_cohort() -> None:
    """30 accounts created in the same hour weeks ago, all following one target over a day, are
    a cohort (signup lockstep); 30 newcomers who signed up minutes before following are not."""
    rng = random.Random(7)
    det = LockstepDetector()
    found = _noise(det, rng, T0, T0 + DAY)
    batch = T0 - 20 * DAY
    for i in range(30):
        found += det.observe(ev(T0 + DAY + rng.uniform(0, DAY), f"aged{i}", "drip", created=batch + i * 60), 3000)
    for i in range(30):
        ts = T0 + DAY + rng.uniform(0, 3600)
        found += det.observe(ev(ts, f"newcomer{i}", "viral", created=ts - 300), 3000)
    flagged = {f.actor for f in found if isinstance(f, AccountFlag)}
    assert len(flagged) >= 20 and all(a.startswith("aged") for a in flagged)


def test_lockstep_state_is_bounded() -> None:
    """Actors and pairs are capped LRUs."""
    from followers.config import LockstepSettings

    det = LockstepDetector(LockstepSettings(max_actors=100, max_pairs=200))
    rng = random.Random(8)
    for i in range(5000):
        det.observe(ev(T0 + i, f"a{rng.randrange(1000)}", f"t{rng.randrange(1000)}"), 1000)
    assert len(det.recent) <= 100 and len(det.pairs) <= 200 and len(det.action_counts) <= 200
