"""Outgoing webhooks for moderation events: JSON signed with HMAC-SHA256, delivered with retries
and exponential back-off, and dead-lettered (a ``review_webhooks`` row in state ``dead``, visible
in the API and console) when the last attempt fails.

Signature (Stripe-style, so the receiver can refuse replays): ``X-Tsgate-Signature: t=<unix>,
v1=<hex HMAC-SHA256(secret, "<t>." + body)>``. ``X-Tsgate-Delivery`` is the row id (receivers
de-duplicate on it: a delivery whose answer was lost is sent again)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from authn.db import Database
from gateway.core.clock import Clock, SystemClock
from review.http import HttpFailure, send
from review.models import WebhookDelivery

__all__ = ["WebhookSender", "sign", "verify_signature"]


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, body: bytes, header: str, now: float, tolerance: float = 300) -> bool:
    """The receiver's check (used by tests and documented for backends)."""
    if len(header) > 512:
        return False
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    stamp = fields.get("t", "")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return False
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class WebhookSender:
    def __init__(self, database: Database, url: str, secret: bytes, *, attempts: int = 4, backoff: float = 1.0,
                 timeout: float = 5.0, clock: Clock | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if not secret:
            raise ValueError("the webhook secret is empty")
        self.database = database
        self.url = url
        self.secret = secret
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.clock = clock or SystemClock()
        self.sleep = sleep
        self._tasks: set[asyncio.Task[str]] = set()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), UTC)

    def submit(self, event: str, item_id: str | None, payload: dict[str, Any]) -> dict[str, Any]:
        """Start delivering in the background (the moderator does not wait for back-off)."""
        delivery_id = uuid.uuid4().hex
        task = asyncio.create_task(self.deliver(event, item_id, payload, delivery_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"delivery": delivery_id, "event": event}

    async def drain(self) -> None:
        """Wait for background deliveries (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def deliver(self, event: str, item_id: str | None, payload: dict[str, Any],
                      delivery_id: str | None = None) -> str:
        """Deliver now with retries; the final state: ``delivered`` or ``dead``."""
        delivery_id = delivery_id or uuid.uuid4().hex
        now = self._now()
        async with self.database.transaction() as session:
            session.add(WebhookDelivery(id=delivery_id, item_id=item_id, event=event, url=self.url[:1024],
                                        payload=payload, state="pending", attempts=0, created_at=now, updated_at=now))
        return await self._attempt(delivery_id, event, payload)

    async def retry(self, delivery_id: str) -> str:
        """Send a dead-lettered delivery again (from the console or API)."""
        async with self.database.transaction() as session:
            row = await session.get(WebhookDelivery, delivery_id)
            if row is None:
                raise KeyError(delivery_id)
            event, payload = row.event, row.payload
        return await self._attempt(delivery_id, event, payload)

    async def _attempt(self, delivery_id: str, event: str, payload: dict[str, Any]) -> str:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        error = ""
        for attempt in range(self.attempts):
            if attempt:
                await self.sleep(self.backoff * 2 ** (attempt - 1))
            headers = [("Content-Type", "application/json"), ("X-Tsgate-Event", event),
                       ("X-Tsgate-Delivery", delivery_id),
                       ("X-Tsgate-Signature", sign(self.secret, body, int(self.clock.now())))]
            try:
                result = await send("POST", self.url, headers, body, timeout=self.timeout)
            except HttpFailure as exc:
                error = str(exc)
            else:
                if 200 <= result.status < 300:
                    await self._mark(delivery_id, "delivered", attempt + 1, None)
                    return "delivered"
                error = f"HTTP {result.status}"
            await self._mark(delivery_id, "pending", attempt + 1, error)
        await self._mark(delivery_id, "dead", self.attempts, error)
        return "dead"

    async def _mark(self, delivery_id: str, state: str, attempts: int, error: str | None) -> None:
        async with self.database.transaction() as session:
            await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
                state=state, last_error=error[:1000] if error else None, updated_at=self._now(),
                attempts=attempts)
                .execution_options(synchronize_session=False))

    async def deliveries(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        async with self.database.transaction() as session:
            query = select(WebhookDelivery).order_by(WebhookDelivery.created_at.desc()).limit(limit)
            if state:
                query = query.where(WebhookDelivery.state == state)
            rows = (await session.execute(query)).scalars().all()
        return [{"id": r.id, "item_id": r.item_id, "event": r.event, "url": r.url, "state": r.state,
                 "attempts": r.attempts, "last_error": r.last_error, "payload": r.payload,
                 "created_at": r.created_at.isoformat(), "updated_at": r.updated_at.isoformat()} for r in rows]
