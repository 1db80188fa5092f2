"""The durable outbox with the real forward courier on SQLite and PostgreSQL: an approved held
request whose backend is down stays pending with a due time (exponential back-off on a frozen
clock), is delivered by a *new* outbox (a restarted gateway) once the backend is up, is taken by
exactly one of several racing workers, and is dead-lettered after its last attempt; a 4xx is the
backend's final word. The backend is a real HTTP server on a socket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from authn.db import Database
from gateway.core.clock import FrozenClock
from moderation.records import ReviewItem, ReviewQueue
from review.effects import FORWARD, ForwardCourier
from review.outbox import Outbox
from tests.conftest import free_port
from tests.review.conftest import new_item
from tests.review.helpers import Recorder

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    backend = Recorder(free_port())  # not started: the backend is down
    yield backend
    backend.stop()


def outbox_for(db: Database, clock: FrozenClock, port: int, attempts: int = 4) -> Outbox:
    """What a gateway process builds: an outbox with the forward courier routed."""
    outbox = Outbox(db, clock=clock)

    async def row(item_id: str) -> ReviewItem | None:
        async with db.transaction() as session:
            return await session.get(ReviewItem, item_id)

    outbox.route({FORWARD: ForwardCourier(row, upstream_url=lambda: f"http://127.0.0.1:{port}", authn=lambda: None,
                                          attempts=attempts, backoff=10.0, timeout=2.0)})
    return outbox


async def held(db: Database, decision_id: str = "d-1") -> str:
    return await ReviewQueue(db).enqueue(new_item(decision_id, principal_id="ext:backend:alice",
                                                  principal_kind="external"))


async def test_a_forward_to_a_down_backend_is_retried_with_back_off_and_survives_a_restart(
        db: Database, recorder: Recorder) -> None:
    """Down: pending, due after 10 s, then 20 s; not before. A fresh outbox (restart) delivers it when up."""
    clock = FrozenClock(T0)
    outbox = outbox_for(db, clock, recorder.port)
    item_id = await held(db)
    delivery = await outbox.enqueue(FORWARD, item_id, "http://backend/", {"decision_id": "fwd-1"})
    state, carried = await outbox.attempt(delivery)
    assert state == "pending" and carried is not None and "ConnectionRefusedError" in str(carried.error)
    assert await outbox.run_due() == 0  # not due yet
    clock.advance(10)
    assert await outbox.run_due() == 1
    row = await outbox.get(delivery)
    assert row["state"] == "pending" and row["attempts"] == 2
    assert row["next_attempt_at"] == datetime.fromtimestamp(T0 + 30, UTC).isoformat()  # 10 s, then 20 s

    restarted = outbox_for(db, clock, recorder.port)  # a new process: nothing in memory
    recorder.start()
    clock.advance(19)
    assert await restarted.run_due() == 0
    clock.advance(1)
    assert await restarted.run_due() == 1
    (request,) = recorder.wait(1)
    assert request["method"] == "POST" and request["target"] == "/api/posts/1/comments"
    assert request["body"] == b'{"body": "x"}' and recorder.header(request, "x-tsgate-decision") == ["fwd-1"]
    assert recorder.header(request, "x-tsgate-user") == ["alice"]
    done = await restarted.get(delivery)
    assert done["state"] == "delivered" and done["attempts"] == 3 and done["last_error"] is None


async def test_racing_workers_make_one_attempt_and_the_last_failure_is_a_dead_letter(
        db: Database, recorder: Recorder) -> None:
    """Four workers race for a due row: the backend sees one request; 5xx until the last attempt: dead."""
    clock = FrozenClock(T0)
    recorder.status = 503
    recorder.start()
    workers = [outbox_for(db, clock, recorder.port, attempts=2) for _ in range(4)]
    delivery = await workers[0].enqueue(FORWARD, await held(db), "http://backend/", {"decision_id": "fwd-2"})
    tried = await asyncio.gather(*(w.run_due() for w in workers))
    assert sum(tried) == 1 and len(recorder.wait(1)) == 1
    assert (await workers[0].get(delivery))["last_error"] == "HTTP 503"
    clock.advance(10)
    assert sum(await asyncio.gather(*(w.run_due() for w in workers))) == 1
    dead = await workers[1].get(delivery)
    assert dead["state"] == "dead" and dead["attempts"] == 2 and len(recorder.requests) == 2
    assert [d["id"] for d in await workers[2].deliveries("dead", event=FORWARD)] == [delivery]
    recorder.status = 201
    assert await workers[3].retry_now(delivery) == "delivered"  # a moderator's retry


async def test_a_4xx_is_final_and_a_missing_held_request_is_not_retried(db: Database, recorder: Recorder) -> None:
    """422 from the backend: dead at once (retrying cannot help); so is a forward whose item is gone."""
    clock = FrozenClock(T0)
    recorder.status = 422
    recorder.start()
    outbox = outbox_for(db, clock, recorder.port)
    refused = await outbox.enqueue(FORWARD, await held(db), "http://backend/", {"decision_id": "fwd-3"})
    assert (await outbox.attempt(refused))[0] == "dead"
    gone = await outbox.enqueue(FORWARD, "no-such-item", "http://backend/", {})
    state, carried = await outbox.attempt(gone)
    assert state == "dead" and carried is not None and carried.error == "the held request is gone"
    assert len(recorder.requests) == 1
