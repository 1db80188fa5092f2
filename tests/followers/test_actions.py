"""Findings become labels and review items: a cohort is ONE item listing its accounts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from followers.actions import FollowActions, FollowReview, LabelStore
from followers.findings import AccountFlag, CohortFound, TargetFlag
from followers.review import ModerationQueueSink, review_item
from gateway.core.clock import FrozenClock
from gateway.core.state.memory import MemoryStore
from tests.followers.conftest import T0


class Sink:
    def __init__(self) -> None:
        self.items: list[FollowReview] = []

    async def submit(self, review: FollowReview) -> str:
        self.items.append(review)
        return review.review_id


def cohort(size: int, ts: float) -> CohortFound:
    return CohortFound("c123", ts, tuple(f"a{i}" for i in range(size)), ("t1", "t2"), -40.0)


async def test_growing_cohort_is_one_review_item_once_settled() -> None:
    """Reports of one cohort at 10, 20 and 40 accounts give one item, written when it stopped
    growing, listing all 40 accounts."""
    sink = Sink()
    actions = FollowActions(None, sink, label_ttl_s=60, settle_s=600)
    for size, ts in ((10, T0), (20, T0 + 60), (40, T0 + 120)):
        await actions.apply([cohort(size, ts)], ts)
    assert sink.items == []
    await actions.flush(T0 + 800)
    assert len(sink.items) == 1 and sink.items[0].kind == "cohort" and len(sink.items[0].accounts) == 40
    await actions.apply([cohort(80, T0 + 900)], T0 + 2000)
    assert len(sink.items) == 1


async def test_labels_have_a_ttl_and_shadow_writes_none() -> None:
    """Account flags become labels that expire; in shadow mode no label is written."""
    clock = FrozenClock()
    store = MemoryStore("memory://", clock=clock)
    labels = LabelStore(store)
    await FollowActions(labels, None, label_ttl_s=100).apply([AccountFlag("a", T0, "burst:t", 2.0)], T0)
    assert (await labels.get("a")) == {"source": "burst:t", "at": T0, "risk": 2.0}
    clock.advance(101)
    assert await labels.get("a") is None
    shadow = FollowActions(labels, None, label_ttl_s=100, shadow=True)
    await shadow.apply([AccountFlag("b", T0, "burst:t", 2.0)], T0)
    assert await labels.get("b") is None and shadow.counters["shadow_labels"] == 1


def test_moderation_item_shape() -> None:
    """A cohort maps to one follow/flag NewReviewItem listing every account, grouped by cohort id;
    long ids are hashed to fit the queue's 64-character decision id."""
    actions_review = FollowActions(None, None, label_ttl_s=1)
    del actions_review
    from followers.actions import _cohort_review, _target_review

    item = review_item(_cohort_review(cohort(25, T0), False))
    assert (item.kind, item.action, item.group_id, item.principal_kind) == ("follow", "flag", "c123", "cohort")
    assert len(item.content["accounts"]) == 25
    flag = TargetFlag("x" * 200, T0, 600, 100, 0.93, 2.0, 0.2, -50.0, 40.0)
    item = review_item(_target_review(flag, True))
    assert len(item.decision_id) <= 64 and item.shadow and "93%" in item.content["summary"]


async def test_cohort_lands_in_the_real_review_queue_table(tmp_path: Path) -> None:
    """Through ModerationQueueSink a cohort becomes exactly one row in review_items (SQLite)."""
    from sqlalchemy import select

    from authn.db import Database
    from moderation.records import ReviewItem, ReviewQueue

    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    try:
        await database.migrate()
        actions = FollowActions(None, ModerationQueueSink(ReviewQueue(database)), label_ttl_s=60, settle_s=0)
        await actions.apply([cohort(30, T0)], T0 + 1)
        await actions.apply([cohort(30, T0)], T0 + 2)  # the same cohort again: still one item
        async with database.transaction() as session:
            rows: list[Any] = list((await session.execute(select(ReviewItem))).scalars())
        assert len(rows) == 1
        assert rows[0].kind == "follow" and len(rows[0].content["accounts"]) == 30 and rows[0].group_id == "c123"
    finally:
        await database.dispose()
