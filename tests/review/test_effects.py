"""Decisions teach both sides (SQLite and PostgreSQL): a false positive on a follow cohort clears
the fake-follower labels of its accounts in the shared state store (the allow side: they are no
longer refused), and the decision and its effects are in the audit log; a ban keeps the labels."""

from __future__ import annotations

from datetime import UTC, datetime

from authn.db import Database
from followers.actions import LabelStore
from gateway.core.clock import FrozenClock
from gateway.core.state import store_from_url
from moderation.records import ReviewQueue
from policies.model import ReviewConfig
from review.runtime import ReviewRuntime
from tests.review.conftest import new_item

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()


def cohort(decision_id: str, accounts: list[str]) -> object:
    return new_item(decision_id, kind="follow", action="flag", rule_id="followers", principal_id=decision_id,
                    principal_kind="cohort", group_id=decision_id, request=None,
                    content={"accounts": accounts, "targets": ["star"]})


async def test_a_false_positive_cohort_clears_its_accounts_labels_and_a_ban_keeps_them(db: Database) -> None:
    """false_positive: bot1/bot2 unlabelled (ghost had none); ban_account on another cohort: labels stay."""
    clock = FrozenClock(T0)
    store = store_from_url("memory://", clock=clock)
    labels = LabelStore(store)
    for actor in ("bot1", "bot2", "bot3"):
        await labels.put(actor, 3600, {"source": "lockstep"})
    runtime = ReviewRuntime(db, ReviewConfig(), upstream_url="http://127.0.0.1:9", authn=lambda: None, clock=clock,
                            env={}, labels=lambda: labels)
    queue = ReviewQueue(db)
    innocent = await queue.enqueue(cohort("cohort:a", ["bot1", "bot2", "ghost"]))  # type: ignore[arg-type]
    guilty = await queue.enqueue(cohort("cohort:b", ["bot3"]))  # type: ignore[arg-type]

    decided = await runtime.decide(innocent, "false_positive", "mia")
    assert decided.effects["labels_cleared"] == {"cleared": ["bot1", "bot2"]}
    assert not await labels.has("bot1") and not await labels.has("bot2")
    await runtime.decide(guilty, "ban_account", "mia")
    assert await labels.has("bot3")
    actions = {(e["action"], e["item_id"]) for e in await runtime.service.audit_log()}
    assert {("decide:false_positive", innocent), ("effects:false_positive", innocent),
            ("decide:ban_account", guilty)} <= actions
    await runtime.aclose()
