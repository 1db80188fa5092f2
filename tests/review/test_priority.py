"""priority = score x reach (review.priority): reach per item kind (the author's observed
followers, cohort accounts x targets, a flagged target's recent followers), what is written through
the gateway's sink on SQLite and PostgreSQL, and the order of the list and of claim-next (priority,
then age). Escalation puts an item first without overflowing a 32-bit INTEGER."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from authn.db import Database
from gateway.core.clock import FrozenClock
from moderation.records import ReviewQueue
from review.priority import ESCALATION_BOOST, MAX_PRIORITY, PrioritySink, priority, reach_of
from review.queue import ItemFilter, ReviewService
from tests.review.conftest import new_item

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def follow_item(decision_id: str, kind: str, score: float, accounts: int, targets: int = 1,
                followers: int | None = None, minutes: int = 0) -> object:
    details = {"followers": followers} if followers is not None else {}
    return new_item(decision_id, kind="follow", action="flag", rule_id="followers", score=score,
                    principal_id=f"{kind}:{decision_id}", principal_kind=kind, request=None,
                    content={"accounts": [f"bot{i}" for i in range(accounts)],
                             "targets": [f"t{i}" for i in range(targets)], "details": details},
                    created_at=T0 + timedelta(minutes=minutes))


@pytest.mark.parametrize(("score", "reach", "expected"), [
    (11.5, 1, 1150), (2.0, 30, 6000), (0.0, 1e6, 0), (-3.0, 10, 0), (None, 10, 0), (1.0, 0.2, 100),
    (math.nan, 5, 0), (5.0, math.inf, 500), (1e6, 1e9, MAX_PRIORITY)])
def test_priority_is_score_times_reach_clamped(score: float | None, reach: float, expected: int) -> None:
    """Two decimals of the product; no score is 0; reach below 1 (or not finite) counts as 1; capped."""
    assert priority(score, reach) == expected


def test_reach_per_kind() -> None:
    """Content: the author's observed followers (by external subject), else 1; cohorts: accounts x
    targets; flagged targets: their recent followers."""
    audience = {"alice": 250.0}.get
    author = new_item("c-1", principal_id="ext:backend:alice", principal_kind="external")
    assert reach_of(author, audience).value == 250.0
    assert reach_of(author, None).value == 1.0
    assert reach_of(new_item("c-2", principal_id="ip:192.0.2.1", principal_kind="anonymous"), audience).value == 1.0
    assert reach_of(follow_item("f-1", "cohort", 3.0, accounts=6, targets=4)).value == 24.0  # type: ignore[arg-type]
    target = follow_item("f-2", "target", 2.0, accounts=3, followers=400)
    assert reach_of(target).value == 400.0  # type: ignore[arg-type]
    broken = new_item("c-3", principal_id="ext:backend:bob", principal_kind="external")

    def failing(name: str) -> float | None:
        raise RuntimeError("detectors away")

    assert reach_of(broken, failing).value == 1.0  # advisory: never loses the item


async def test_the_sink_writes_score_times_reach_and_the_queue_and_claims_follow_it(db: Database) -> None:
    """A mild post by a big account outranks spammier ones by nobodies and a cohort (reach: its
    size); equal priorities go oldest first, for the list and for claim-next."""
    sink = PrioritySink(ReviewQueue(db), audience={"celebrity": 1000.0}.get)
    ids = {
        "big": await sink.enqueue(new_item("c-big", score=6.0, principal_id="ext:backend:celebrity",
                                           principal_kind="external")),
        "spam": await sink.enqueue(new_item("c-spam", score=40.0, principal_id="ext:backend:nobody",
                                            principal_kind="external")),
        "cohort": await sink.enqueue(follow_item("f-c", "cohort", 3.0, accounts=10, targets=5)),  # type: ignore[arg-type]
        "old-tie": await sink.enqueue(new_item("c-old", score=40.0, principal_id="ip:192.0.2.7",
                                               principal_kind="anonymous", created_at=T0 - timedelta(hours=1))),
    }
    service = ReviewService(db, clock=FrozenClock(T0.timestamp() + 60))
    items, _ = await service.list_items(ItemFilter())
    order = [i["id"] for i in items]
    assert order == [ids["big"], ids["cohort"], ids["old-tie"], ids["spam"]]
    assert [i["priority"] for i in items] == [600_000, 15_000, 4000, 4000]
    assert items[0]["content"]["reach"] == {"value": 1000.0,
                                            "basis": "followers of celebrity observed by the follow detectors"}
    assert items[1]["content"]["reach"]["basis"] == "10 accounts x 5 targets"
    claimed = [await service.claim_next(f"mod-{n}") for n in range(4)]
    assert [c["id"] for c in claimed if c is not None] == order

    escalated = await service.decide(ids["spam"], "escalate", "mod-3")
    again = await service.decide(ids["spam"], "escalate", "mod-3")
    assert escalated.item["priority"] == again.item["priority"] == ESCALATION_BOOST + 4000
    assert (await service.claim_next("senior")) is not None  # the escalated item is first and open
    assert (await service.list_items(ItemFilter(state="claimed"), limit=1))[0][0]["id"] == ids["spam"]
