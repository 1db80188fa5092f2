"""One gateway's review runtime: the queue service, what decisions do, the durable outbox (webhooks
and forwards of approved held requests) and its retry task, built from the policy's ``review:``
section. The API, the console and the appeal endpoint use it.

A policy reload applies a new ``review:`` section in place (``prepare`` validates it — a webhook
secret missing from the environment rejects the reload — and ``apply`` swaps it in): the lease of
new claims, appeal limits, the webhook's URL, secret and retry policy, and the forward retry
policy. Deliveries already queued are carried by the new couriers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from authn.db import Database
from authn.runtime import AuthnRuntime
from gateway.core.clock import Clock
from gateway.core.errors import ConfigError
from moderation.records import ReviewItem
from policies.model import ReviewConfig
from review.effects import FORWARD, AccountLabels, DecisionEffects, ForwardCourier
from review.errors import ItemNotFound
from review.outbox import Outbox
from review.queue import Decided, DecisionName, ReviewService
from review.webhooks import WebhookSender

__all__ = ["ReviewRuntime", "ReviewSettings"]


@dataclass(frozen=True, slots=True)
class ReviewSettings:
    """A validated ``review:`` section with what it needs from outside (the webhook secret)."""

    config: ReviewConfig
    webhook_secret: bytes | None


class ReviewRuntime:
    def __init__(self, database: Database, settings: ReviewConfig, *, upstream_url: str | Callable[[], str],
                 authn: Callable[[], AuthnRuntime | None], clock: Clock,
                 env: Mapping[str, str] | None = None, retry_poll: float = 1.0,
                 labels: Callable[[], AccountLabels | None] = lambda: None) -> None:
        self.env = os.environ if env is None else env
        self._labels = labels  # the follower detectors' account labels (read each time: reloads)
        self.clock = clock
        self.retry_poll = retry_poll
        self._authn = authn
        self._upstream = upstream_url if callable(upstream_url) else (lambda: upstream_url)
        self.service = ReviewService(database, clock=clock, lease_seconds=settings.lease)
        self.outbox = Outbox(database, clock=clock)
        self.webhooks: WebhookSender | None = None
        self._retrier: asyncio.Task[None] | None = None
        self.apply(self.prepare(settings))

    # -- settings (start and reload) ------------------------------------------------------------

    def prepare(self, settings: ReviewConfig) -> ReviewSettings:
        """Validate a ``review:`` section against the environment; ``ConfigError`` names the field."""
        secret: bytes | None = None
        if settings.webhook is not None:
            value = self.env.get(settings.webhook.secret_env, "")
            if not value:
                raise ConfigError(f"review.webhook.secret_env: environment variable "
                                  f"{settings.webhook.secret_env} is not set")
            secret = value.encode()
        return ReviewSettings(settings, secret)

    def apply(self, prepared: ReviewSettings) -> None:
        """Swap a prepared ``review:`` section in (no awaits: requests see the old or the new)."""
        settings = prepared.config
        self.settings = settings
        self.service.lease = timedelta(seconds=settings.lease)
        forward = settings.forward
        courier = ForwardCourier(self._item_row, upstream_url=lambda: self.upstream_url, authn=self._authn,
                                 attempts=forward.attempts, backoff=forward.backoff, timeout=forward.timeout)
        self.outbox.route({FORWARD: courier})
        if settings.webhook is None or prepared.webhook_secret is None:
            self.webhooks = None
            self.outbox.route({"*": None})
        else:
            hook = settings.webhook
            self.webhooks = WebhookSender(self.service.database, hook.url, prepared.webhook_secret,
                                          attempts=hook.attempts, backoff=hook.backoff, timeout=hook.timeout,
                                          clock=self.clock, outbox=self.outbox)

    def reconfigure(self, settings: ReviewConfig) -> None:
        self.apply(self.prepare(settings))

    async def _item_row(self, item_id: str) -> ReviewItem | None:
        try:
            return await self.service.get_row(item_id)
        except ItemNotFound:
            return None

    @property
    def upstream_url(self) -> str:
        """The backend approved requests go to (read each time: a reload may move it)."""
        return self._upstream()

    @property
    def authn(self) -> AuthnRuntime | None:
        return self._authn()

    def effects(self) -> DecisionEffects:
        return DecisionEffects(outbox=self.outbox, upstream_url=self.upstream_url, authn=self.authn,
                               webhooks=self.webhooks, labels=self._labels())

    # -- decisions ------------------------------------------------------------------------------

    async def decide(self, item_id: str, decision: DecisionName, moderator: str,
                     note: str | None = None) -> Decided:
        """Record the decision, then act on it once (a replayed decision does not act again)."""
        decided = await self.service.decide(item_id, decision, moderator, note)
        if decided.replayed or decision == "escalate":
            return decided
        return await self._act(decided)

    async def decide_group(self, group_id: str, decision: DecisionName, moderator: str,
                           note: str | None = None) -> list[Decided]:
        recorded = await self.service.decide_group(group_id, decision, moderator, note)
        out = []
        for decided in recorded:
            out.append(decided if decided.replayed or decision == "escalate" else await self._act(decided))
        return out

    async def _act(self, decided: Decided) -> Decided:
        row = await self.service.get_row(str(decided.item["id"]))
        effects: dict[str, Any] = await self.effects().apply(decided, row)
        if effects:
            await self.service.record_effects(decided, effects)
        return Decided(decided.decision_id, decided.decision, decided.moderator, decided.item, False, effects)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start retrying due deliveries (left by this process or a previous one)."""
        if self._retrier is None:
            self._retrier = asyncio.get_running_loop().create_task(self.outbox.run(self.retry_poll))

    async def aclose(self) -> None:
        if self._retrier is not None:
            self._retrier.cancel()
            try:
                await self._retrier
            except asyncio.CancelledError:
                pass
            self._retrier = None
        await self.outbox.drain()  # first attempts in flight finish (failures stay pending, durably)
