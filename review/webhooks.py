"""Outgoing webhooks for moderation events: JSON signed with HMAC-SHA256, delivered through the
durable outbox (``review.outbox``: retries with exponential back-off that survive a restart) and
dead-lettered (a ``review_webhooks`` row in state ``dead``, visible in the API and console) when
the last attempt fails.

Signature (Stripe-style, so the receiver can refuse replays): ``X-Tsgate-Signature: t=<unix>,
v1=<hex HMAC-SHA256(secret, "<t>." + body)>``. ``X-Tsgate-Delivery`` is the row id (receivers
de-duplicate on it: a delivery whose answer was lost is sent again)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from authn.db import Database
from gateway.core.clock import Clock, SystemClock
from review.http import HttpFailure, send
from review.outbox import Carried, Delivery, Outbox

__all__ = ["WebhookCourier", "WebhookSender", "sign", "verify_signature"]


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


class WebhookCourier:
    """Carries webhook events: the payload as compact JSON, signed; any 2xx is delivered."""

    def __init__(self, url: str, secret: bytes, *, attempts: int = 4, backoff: float = 1.0, timeout: float = 5.0,
                 clock: Clock | None = None) -> None:
        if not secret:
            raise ValueError("the webhook secret is empty")
        self.url = url
        self.secret = secret
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.clock = clock or SystemClock()

    async def carry(self, delivery: Delivery) -> Carried:
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
        headers = [("Content-Type", "application/json"), ("X-Tsgate-Event", delivery.event),
                   ("X-Tsgate-Delivery", delivery.id),
                   ("X-Tsgate-Signature", sign(self.secret, body, int(self.clock.now())))]
        try:
            result = await send("POST", self.url, headers, body, timeout=self.timeout)
        except HttpFailure as exc:
            return Carried(False, error=str(exc))
        if 200 <= result.status < 300:
            return Carried(True, result.status)
        return Carried(False, result.status, f"HTTP {result.status}")


class WebhookSender:
    """Webhook events into the outbox: ``submit`` commits the delivery and makes the first attempt
    in the background; later attempts are the outbox's (``Outbox.run``)."""

    def __init__(self, database: Database, url: str, secret: bytes, *, attempts: int = 4, backoff: float = 1.0,
                 timeout: float = 5.0, clock: Clock | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, outbox: Outbox | None = None) -> None:
        self.courier = WebhookCourier(url, secret, attempts=attempts, backoff=backoff, timeout=timeout, clock=clock)
        self.outbox = outbox or Outbox(database, clock=clock, sleep=sleep)
        self.outbox.route({"*": self.courier})

    @property
    def url(self) -> str:
        return self.courier.url

    @property
    def secret(self) -> bytes:
        return self.courier.secret

    async def submit(self, event: str, item_id: str | None, payload: dict[str, Any]) -> dict[str, Any]:
        """Commit the delivery (durable before the decision is answered), then send it in the
        background: the moderator does not wait for the backend or the back-off."""
        delivery_id = await self.outbox.enqueue(event, item_id, self.url, payload)
        self.outbox.attempt_soon(delivery_id)
        return {"delivery": delivery_id, "event": event}

    async def drain(self) -> None:
        await self.outbox.drain()

    async def deliver(self, event: str, item_id: str | None, payload: dict[str, Any],
                      delivery_id: str | None = None) -> str:
        """Deliver now, every attempt inline with its back-off; the final state."""
        delivery_id = await self.outbox.enqueue(event, item_id, self.url, payload, delivery_id)
        return await self.outbox.deliver_now(delivery_id)

    async def retry(self, delivery_id: str) -> str:
        """A dead letter again, with a fresh set of attempts: the first now (console, API)."""
        return await self.outbox.retry_now(delivery_id)

    async def deliveries(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return await self.outbox.deliveries(state, limit)
