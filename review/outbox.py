"""The durable outbox behind every effect that talks to the backend: signed webhooks (remove, ban)
and forwards of approved held requests. One row per delivery in ``review_webhooks``:
``pending → delivered``, or ``dead`` after its courier's last attempt (a dead letter, visible in
the API and console, retried by hand).

Durability: a row is committed before anything is sent, and every failed attempt stores when the
next one is due (``next_attempt_at``, exponential back-off). ``run`` — one task per gateway
process — picks up due rows, so retries survive a restart and carry on in any worker.

Concurrency: an attempt first *takes* its row with a conditional ``UPDATE ... WHERE state =
'pending' AND next_attempt_at <= now`` that moves ``next_attempt_at`` past the attempt's own
timeout (a lease). Of several workers racing for one row exactly one sees ``rowcount == 1``; if it
dies mid-attempt, the row falls due again when the lease runs out.

Couriers (``Courier``) know how to carry one kind of delivery and how often to try; the outbox
knows nothing about HTTP."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import or_, select, update

from authn.db import Database
from gateway.core.clock import Clock, SystemClock
from review.models import WebhookDelivery

__all__ = ["Carried", "Courier", "Delivery", "Outbox"]

log = logging.getLogger("tsgate.review.outbox")

State = Literal["pending", "delivered", "dead"]
LEASE_MARGIN = 5.0  # seconds past a courier's timeout before a taken row is due again


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    event: str
    item_id: str | None
    url: str
    payload: dict[str, Any]
    attempts: int  # attempts made before this one


@dataclass(frozen=True, slots=True)
class Carried:
    """One attempt's outcome: ``ok``, or the error and whether trying again can help."""

    ok: bool
    status: int | None = None
    error: str | None = None
    retry: bool = True


class Courier(Protocol):
    """Carries one kind of delivery. ``attempts``/``backoff``/``timeout`` are its retry policy."""

    attempts: int
    backoff: float
    timeout: float

    async def carry(self, delivery: Delivery) -> Carried: ...


def _retry_delay(backoff: float, attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: ``backoff`` doubled each time."""
    return backoff * 2.0 ** (attempts - 1)


class Outbox:
    def __init__(self, database: Database, *, clock: Clock | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.database = database
        self.clock = clock or SystemClock()
        self.sleep = sleep
        self.couriers: dict[str, Courier] = {}  # event -> courier; "*" carries any other event
        self._tasks: set[asyncio.Task[Any]] = set()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), UTC)

    def courier(self, event: str) -> Courier | None:
        return self.couriers.get(event) or self.couriers.get("*")

    def route(self, couriers: Mapping[str, Courier | None]) -> None:
        """Set (or, with ``None``, remove) the couriers of some events — a reload swaps them here;
        rows already queued are carried by the new courier."""
        for event, courier in couriers.items():
            if courier is None:
                self.couriers.pop(event, None)
            else:
                self.couriers[event] = courier

    # -- writing and attempting -----------------------------------------------------------------

    async def enqueue(self, event: str, item_id: str | None, url: str, payload: dict[str, Any],
                      delivery_id: str | None = None) -> str:
        """Commit a pending delivery, due now."""
        delivery_id = delivery_id or uuid.uuid4().hex
        now = self._now()
        async with self.database.transaction() as session:
            session.add(WebhookDelivery(id=delivery_id, item_id=item_id, event=event[:32], url=url[:1024],
                                        payload=payload, state="pending", attempts=0, next_attempt_at=now,
                                        created_at=now, updated_at=now))
        return delivery_id

    async def attempt(self, delivery_id: str, *, force: bool = False) -> tuple[State | None, Carried | None]:
        """Take the row (if pending and due, or ``force``: pending whenever) and make one attempt.
        ``(None, None)``: someone else has it, it is not due, or it is no longer pending."""
        now = self._now()
        async with self.database.transaction() as session:
            row = await session.get(WebhookDelivery, delivery_id)
            if row is None:
                raise KeyError(delivery_id)
            courier = self.courier(row.event)
            if courier is None or row.state != "pending":
                return None, None
            delivery = Delivery(row.id, row.event, row.item_id, row.url, dict(row.payload), row.attempts)
            due = [] if force else [or_(WebhookDelivery.next_attempt_at.is_(None),
                                        WebhookDelivery.next_attempt_at <= now)]
            lease = now + timedelta(seconds=courier.timeout + LEASE_MARGIN)
            taken = await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending",
                       WebhookDelivery.attempts == delivery.attempts, *due)
                .values(next_attempt_at=lease, updated_at=now).execution_options(synchronize_session=False))
            if int(getattr(taken, "rowcount", 0) or 0) != 1:
                return None, None
        try:
            carried = await courier.carry(delivery)
        except Exception as exc:  # a courier bug must not leave the row leased forever
            log.exception("courier for %s failed", delivery.event)
            carried = Carried(False, error=f"{type(exc).__name__}: {exc}")
        attempts = delivery.attempts + 1
        if carried.ok:
            state: State = "delivered"
        elif not carried.retry or attempts >= courier.attempts:
            state = "dead"
        else:
            state = "pending"
        later = self._now() + timedelta(seconds=_retry_delay(courier.backoff, attempts))
        await self._mark(delivery_id, state, attempts, None if carried.ok else carried.error,
                         later if state == "pending" else None)
        if state == "dead":
            log.warning("delivery %s (%s) dead-lettered after %d attempts: %s", delivery_id, delivery.event,
                        attempts, carried.error)
        return state, carried

    async def deliver_now(self, delivery_id: str) -> State:
        """Every remaining attempt now, sleeping the back-off in between (tests, a moderator's retry)."""
        while True:
            state, _ = await self.attempt(delivery_id, force=True)
            if state != "pending":
                return state or await self.state(delivery_id)
            async with self.database.transaction() as session:
                row = await session.get(WebhookDelivery, delivery_id)
                assert row is not None
                attempts = row.attempts
            courier = self.courier(row.event)
            await self.sleep(_retry_delay(courier.backoff if courier else 1.0, attempts))

    def attempt_soon(self, delivery_id: str) -> None:
        """The first attempt in the background (the moderator does not wait for it); the rest, if
        it fails, when ``run`` finds the row due."""
        task = asyncio.create_task(self.attempt(delivery_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reopen(self, delivery_id: str) -> None:
        """A dead letter (or a stuck row) becomes pending and due now with a fresh set of attempts."""
        now = self._now()
        async with self.database.transaction() as session:
            result = await session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                .values(state="pending", attempts=0, next_attempt_at=now, updated_at=now)
                .execution_options(synchronize_session=False))
            if int(getattr(result, "rowcount", 0) or 0) != 1:
                raise KeyError(delivery_id)

    async def retry_now(self, delivery_id: str) -> State:
        """A moderator's retry: reopen the row and attempt it now; later attempts, if this one
        fails, are ``run``'s."""
        await self.reopen(delivery_id)
        state, _ = await self.attempt(delivery_id, force=True)
        return state or await self.state(delivery_id)

    async def run_due(self, limit: int = 50) -> int:
        """Attempt every pending delivery that is due (and has a courier here); how many were tried."""
        now = self._now()
        events = list(self.couriers)
        async with self.database.transaction() as session:
            query = (select(WebhookDelivery.id).where(
                WebhookDelivery.state == "pending",
                or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now))
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.created_at).limit(limit))
            if "*" not in events:
                query = query.where(WebhookDelivery.event.in_(events))
            ids = (await session.execute(query)).scalars().all()
        tried = 0
        for delivery_id in ids:
            state, _ = await self.attempt(delivery_id)
            tried += state is not None
        return tried

    async def run(self, poll: float = 1.0) -> None:
        """Retry due deliveries until cancelled (one task per process; database errors are logged
        and the next poll tries again)."""
        while True:
            try:
                await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("retrying due review deliveries failed; next poll retries", exc_info=True)
            await asyncio.sleep(poll)

    async def drain(self) -> None:
        """Wait for first attempts started in the background (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _mark(self, delivery_id: str, state: State, attempts: int, error: str | None,
                    next_attempt_at: datetime | None) -> None:
        async with self.database.transaction() as session:
            await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
                state=state, last_error=error[:1000] if error else None, updated_at=self._now(),
                attempts=attempts, next_attempt_at=next_attempt_at)
                .execution_options(synchronize_session=False))

    # -- reading --------------------------------------------------------------------------------

    async def get(self, delivery_id: str) -> dict[str, Any]:
        async with self.database.transaction() as session:
            row = await session.get(WebhookDelivery, delivery_id)
        if row is None:
            raise KeyError(delivery_id)
        return view(row)

    async def state(self, delivery_id: str) -> State:
        return (await self.get(delivery_id))["state"]  # type: ignore[no-any-return]

    async def deliveries(self, state: str | None = None, limit: int = 100, *, item_id: str | None = None,
                         event: str | None = None) -> list[dict[str, Any]]:
        async with self.database.transaction() as session:
            query = select(WebhookDelivery).order_by(WebhookDelivery.created_at.desc()).limit(limit)
            if state:
                query = query.where(WebhookDelivery.state == state)
            if item_id:
                query = query.where(WebhookDelivery.item_id == item_id)
            if event:
                query = query.where(WebhookDelivery.event == event)
            rows = (await session.execute(query)).scalars().all()
        return [view(r) for r in rows]


def view(r: WebhookDelivery) -> dict[str, Any]:
    return {"id": r.id, "item_id": r.item_id, "event": r.event, "url": r.url, "state": r.state,
            "attempts": r.attempts, "last_error": r.last_error, "payload": r.payload,
            "next_attempt_at": r.next_attempt_at.isoformat() if r.next_attempt_at and r.state == "pending" else None,
            "created_at": r.created_at.isoformat(), "updated_at": r.updated_at.isoformat()}
