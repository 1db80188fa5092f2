"""The review queue service on SQLite and a real PostgreSQL: filters and pages, claims with leases
that expire on a frozen clock, concurrent claims that never hand one item to two moderators,
idempotent decisions, group decisions, the append-only audit log, and stats."""

from __future__ import annotations

import asyncio
import csv
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from authn.db import Database
from gateway.cli import main
from gateway.core.clock import FrozenClock
from moderation.records import ReviewQueue
from review import AlreadyDecided, DecisionNotAllowed, ItemFilter, LeaseHeld, ReviewService
from tests.review.conftest import new_item

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()


async def seed(db: Database, count: int, **overrides: object) -> list[str]:
    queue = ReviewQueue(db)
    return [await queue.enqueue(new_item(f"d-{i}", **{"priority": i, **overrides})) for i in range(count)]


async def test_list_filters_and_pages_by_kind_rule_score_age_and_state(db: Database) -> None:
    """Filters narrow the list; pages are disjoint and ordered by priority, then age."""
    clock = FrozenClock(T0 + 3600)
    service = ReviewService(db, clock=clock)
    queue = ReviewQueue(db)
    await seed(db, 5)
    await queue.enqueue(new_item("f-1", kind="follow", action="flag", rule_id="followers", score=3.0,
                                 principal_kind="cohort", group_id="cohort-1",
                                 created_at=datetime(2026, 11, 24, 12, 50, tzinfo=UTC)))
    items, total = await service.list_items(ItemFilter(kind="content"), limit=2)
    assert total == 5 and [i["priority"] for i in items] == [4, 3]
    page2, _ = await service.list_items(ItemFilter(kind="content"), limit=2, offset=2)
    assert [i["priority"] for i in page2] == [2, 1]
    assert (await service.list_items(ItemFilter(rule="followers")))[1] == 1
    assert (await service.list_items(ItemFilter(max_score=5)))[1] == 1
    assert (await service.list_items(ItemFilter(older_than=1800)))[1] == 5  # the follow item is 10 minutes old
    assert (await service.list_items(ItemFilter(newer_than=1800)))[1] == 1
    await service.claim_next("mod-a")
    assert (await service.list_items(ItemFilter(state="claimed")))[1] == 1
    assert (await service.list_items(ItemFilter(state="open")))[1] == 5


async def test_claim_next_takes_the_most_urgent_item_and_an_expired_lease_returns_it_to_open(db: Database) -> None:
    """A lease keeps an item from others until it expires (frozen clock), then anyone may claim it."""
    clock = FrozenClock(T0)
    service = ReviewService(db, clock=clock, lease_seconds=300)
    ids = await seed(db, 2)
    first = await service.claim_next("mod-a")
    assert first is not None and first["id"] == ids[1] and first["lease_owner"] == "mod-a"
    with pytest.raises(LeaseHeld):
        await service.claim(ids[1], "mod-b")
    with pytest.raises(LeaseHeld):
        await service.decide(ids[1], "remove", "mod-b")
    second = await service.claim_next("mod-b")
    assert second is not None and second["id"] == ids[0]
    assert await service.claim_next("mod-c") is None
    clock.advance(301)
    listed, total = await service.list_items(ItemFilter(state="open"))
    assert total == 2 and all(i["lease_owner"] is None for i in listed)  # expired leases read as open
    again = await service.claim_next("mod-c")
    assert again is not None and again["id"] == ids[1] and again["lease_owner"] == "mod-c"
    assert await service.release_expired() == 1  # mod-b's lease on ids[0] ran out too
    with pytest.raises(LeaseHeld):
        await service.release(ids[0], "mod-b")


async def test_concurrent_claims_never_hand_one_item_to_two_moderators(db: Database) -> None:
    """20 moderators race for 6 items: each item goes to exactly one of them."""
    service = ReviewService(db, clock=FrozenClock(T0))
    await seed(db, 6)

    async def moderator(name: str) -> list[str]:
        got = []
        while (item := await service.claim_next(name)) is not None:
            got.append(str(item["id"]))
        return got

    results = await asyncio.gather(*(moderator(f"mod-{i}") for i in range(20)))
    claimed = Counter(item for got in results for item in got)
    assert len(claimed) == 6 and set(claimed.values()) == {1}
    # the same race on one item through claim(): exactly one winner
    queue = ReviewQueue(db)
    one = await queue.enqueue(new_item("race-1"))

    async def grab(name: str) -> str | None:
        try:
            return str((await service.claim(one, name))["lease_owner"])
        except LeaseHeld:
            return None

    owners = [o for o in await asyncio.gather(*(grab(f"mod-{i}") for i in range(20))) if o is not None]
    assert len(owners) == 1


async def test_decisions_are_idempotent_and_a_different_second_decision_is_refused(db: Database) -> None:
    """The same decision twice returns the first (replayed); another decision is a conflict."""
    service = ReviewService(db, clock=FrozenClock(T0))
    (item_id,) = await seed(db, 1)
    await service.claim(item_id, "mod-a")
    first = await service.decide(item_id, "remove", "mod-a", "obvious prize spam")
    assert not first.replayed and first.item["state"] == "resolved" and first.item["resolution"] == "spam"
    again = await service.decide(item_id, "remove", "mod-b")
    assert again.replayed and again.decision_id == first.decision_id and again.moderator == "mod-a"
    with pytest.raises(AlreadyDecided):
        await service.decide(item_id, "approve", "mod-a")
    detail = await service.get(item_id)
    assert [d["decision"] for d in detail["decisions"]] == ["remove"]


async def test_concurrent_decisions_record_one_decision(db: Database) -> None:
    """Ten moderators deciding one open item at once: one decision row, the others replay it."""
    service = ReviewService(db, clock=FrozenClock(T0))
    (item_id,) = await seed(db, 1)
    results = await asyncio.gather(*(service.decide(item_id, "approve", f"mod-{i}") for i in range(10)))
    assert sum(not r.replayed for r in results) == 1
    assert len({r.decision_id for r in results}) == 1


async def test_escalate_reopens_with_higher_priority_and_group_decisions_cover_the_job(db: Database) -> None:
    """Escalation keeps the item open and first in line; a bulk decision resolves a whole group."""
    service = ReviewService(db, clock=FrozenClock(T0))
    ids = await seed(db, 3, group_id="campaign-1")
    await ReviewQueue(db).enqueue(new_item("other"))  # not in the group
    escalated = await service.decide(ids[0], "escalate", "mod-a")
    assert escalated.item["state"] == "open" and escalated.item["priority"] >= 1000
    decided = await service.decide_group("campaign-1", "remove", "mod-b")
    assert sorted(d.item["id"] for d in decided) == sorted(ids)
    assert (await service.list_items(ItemFilter(group="campaign-1", state="resolved")))[1] == 3
    with pytest.raises(DecisionNotAllowed):
        await service.decide_group("campaign-1", "remove", "mod-b")


async def test_the_audit_log_records_who_what_when_before_and_after(db: Database) -> None:
    """Each claim and decision is an audit row with the state before and after."""
    clock = FrozenClock(T0)
    service = ReviewService(db, clock=clock)
    (item_id,) = await seed(db, 1)
    await service.claim(item_id, "mod-a")
    clock.advance(5)
    await service.decide(item_id, "approve", "mod-a")
    log = await service.audit_log(item_id=item_id)
    assert [e["action"] for e in log] == ["decide:approve", "claim"]
    decide, claim = log
    assert decide["actor"] == "mod-a" and decide["before"]["state"] == "claimed"
    assert decide["after"]["state"] == "resolved" and decide["after"]["resolution"] == "ham"
    assert claim["before"]["state"] == "open" and decide["at"] > claim["at"]


async def test_stats_backlog_ages_per_moderator_and_rule_precision(db: Database) -> None:
    """Precision of a rule = confirmed (remove/ban) / finally decided; escalations don't count."""
    clock = FrozenClock(T0 + 600)
    service = ReviewService(db, clock=clock)
    ids = await seed(db, 5)
    await service.decide(ids[0], "remove", "mod-a")
    await service.decide(ids[1], "ban_account", "mod-a")
    await service.decide(ids[2], "false_positive", "mod-b")
    await service.decide(ids[3], "escalate", "mod-b")
    stats = await service.stats()
    assert stats["backlog"]["total"] == 2 and stats["backlog"]["oldest_age_seconds"] == 600
    assert stats["decisions_per_moderator"] == {"mod-a": {"remove": 1, "ban_account": 1},
                                                "mod-b": {"false_positive": 1, "escalate": 1}}
    assert stats["rules"]["comments"] == {"decided": 3, "confirmed": 2, "precision": 0.6667}


async def test_decisions_become_training_rows_for_export_labels(tmp_path: Path) -> None:
    """approve / false_positive export as ham, remove / ban_account as spam; escalated and open items not."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'labels.db'}"
    database = Database(url)
    await database.migrate()
    service = ReviewService(database, clock=FrozenClock(T0))
    queue = ReviewQueue(database)
    decisions = ["approve", "false_positive", "remove", "ban_account", "escalate", None]
    for i, decision in enumerate(decisions):
        item_id = await queue.enqueue(new_item(f"l-{i}", content={"fields": [{"field": "/body", "text": f"t{i}"}]}))
        if decision is not None:
            await service.decide(item_id, decision, "mod-a")  # type: ignore[arg-type]
    await database.dispose()
    out = tmp_path / "labels.csv"
    assert await asyncio.to_thread(main, ["moderation", "export-labels", "--database", url, "--out", str(out)]) == 0
    with open(out, encoding="utf-8", newline="") as handle:
        rows = sorted(tuple(r) for r in csv.reader(handle))
    assert rows == [("t0", "ham"), ("t1", "ham"), ("t2", "spam"), ("t3", "spam"), ("text", "label")]
