"""A policy reload (what SIGHUP and POST /policy/reload call) applies a new review: section without
a restart: the lease of new claims, the appeal limit, the webhook's URL and retry policy (queued
deliveries go to the new URL) and the forward retry policy. A webhook whose secret is missing from
the environment rejects the reload and keeps the running settings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.core.clock import FrozenClock
from moderation.records import ReviewQueue
from policies.loader import load_policy_text
from review.effects import FORWARD
from tests.review.conftest import new_item
from tests.review.helpers import WEBHOOK_SECRET, Receiver, receiver

POLICY = """
version: 1
upstream: {{url: "http://127.0.0.1:9"}}
database: "sqlite+aiosqlite:///{db}"
review:
  lease: {lease}
  appeal_limit: {appeals}
  forward: {{attempts: {forwards}, backoff: 1s}}
{webhook}
routes:
  - id: comments
    match: {{methods: [POST], path: "/c"}}
    moderation: {{content: [/body]}}
"""


@pytest.fixture
def hook() -> Iterator[Receiver]:
    yield from receiver()


def policy(db: Path, *, lease: str, appeals: int, forwards: int, webhook: str | None, secret_env: str = "RL_SECRET"
           ) -> str:
    section = (f"  webhook: {{url: \"{webhook}\", secret_env: {secret_env}, attempts: 2, backoff: 50ms}}"
               if webhook else "")
    return POLICY.format(db=db, lease=lease, appeals=appeals, forwards=forwards, webhook=section)


async def test_reload_applies_review_settings_in_place(tmp_path: Path, hook: Receiver,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: lease 2m, webhook to nowhere. After reload: lease 30s, appeals 1, webhook to the
    receiver — a remove queued before the reload is delivered there, signed with the secret."""
    monkeypatch.setenv("RL_SECRET", WEBHOOK_SECRET)
    db = tmp_path / "review.db"
    clock = FrozenClock(time.time())
    gw = Gateway(load_policy_text(policy(db, lease="2m", appeals=3, forwards=8, webhook="http://127.0.0.1:9/h"),
                                  "<test>"), clock=clock)
    try:
        await gw.database.migrate()  # not gw.start(): this test runs the outbox's retries itself
        review = gw.review
        assert review is not None and review.webhooks is not None and review.settings.appeal_limit == 3
        queue = ReviewQueue(gw.database)
        first = await queue.enqueue(new_item("d-1"))
        claimed = await review.service.claim(first, "mia")
        start = datetime.fromtimestamp(clock.now(), UTC)
        assert claimed["lease_expires_at"] == (start + timedelta(minutes=2)).isoformat()
        queued = await review.outbox.enqueue("remove", first, review.webhooks.url, {"event": "remove"})

        result = gw.reload(text=policy(db, lease="30s", appeals=1, forwards=2, webhook=hook.url), actor="test")
        assert result.ok, result.problems
        assert gw.review is review and review.settings.appeal_limit == 1  # appeals read it per request
        second = await review.service.claim(await queue.enqueue(new_item("d-2")), "mia")
        assert second["lease_expires_at"] == (start + timedelta(seconds=30)).isoformat()
        forward = review.outbox.courier(FORWARD)
        assert forward is not None and forward.attempts == 2
        assert await review.outbox.run_due() == 1  # the queued remove, carried by the new webhook
        (delivered,) = await asyncio.to_thread(hook.wait, 1)
        assert delivered["delivery"] == queued and hook.bad_signatures == 0

        monkeypatch.delenv("RL_SECRET")
        refused = gw.reload(text=policy(db, lease="5s", appeals=9, forwards=3, webhook=hook.url), actor="test")
        assert not refused.ok and "review.webhook.secret_env" in " ".join(refused.problems)
        assert review.settings.lease == 30 and review.settings.appeal_limit == 1  # unchanged

        removed = gw.reload(text=policy(db, lease="5s", appeals=9, forwards=3, webhook=None), actor="test")
        assert removed.ok and review.webhooks is None and review.outbox.courier("remove") is None
    finally:
        await gw.aclose()
        await gw.database.dispose()
