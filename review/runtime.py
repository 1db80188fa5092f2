"""One gateway's review runtime: the queue service, what decisions do, and the webhook sender,
built from the policy's ``review:`` section. The API, the console and the appeal endpoint use it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from authn.db import Database
from authn.runtime import AuthnRuntime
from gateway.core.clock import Clock
from gateway.core.errors import ConfigError
from policies.model import ReviewConfig
from review.effects import DecisionEffects
from review.queue import Decided, DecisionName, ReviewService
from review.webhooks import WebhookSender

__all__ = ["ReviewRuntime"]


class ReviewRuntime:
    def __init__(self, database: Database, settings: ReviewConfig, *, upstream_url: str | Callable[[], str],
                 authn: Callable[[], AuthnRuntime | None], clock: Clock,
                 env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.settings = settings
        self.service = ReviewService(database, clock=clock, lease_seconds=settings.lease)
        self.webhooks: WebhookSender | None = None
        if settings.webhook is not None:
            secret = env.get(settings.webhook.secret_env, "")
            if not secret:
                raise ConfigError(f"review.webhook.secret_env: environment variable "
                                  f"{settings.webhook.secret_env} is not set")
            self.webhooks = WebhookSender(database, settings.webhook.url, secret.encode(),
                                          attempts=settings.webhook.attempts, backoff=settings.webhook.backoff,
                                          timeout=settings.webhook.timeout, clock=clock)
        self._authn = authn
        self._upstream = upstream_url if callable(upstream_url) else (lambda: upstream_url)

    @property
    def upstream_url(self) -> str:
        """The backend approved requests go to (read each time: a reload may move it)."""
        return self._upstream()

    @property
    def authn(self) -> AuthnRuntime | None:
        return self._authn()

    def effects(self) -> DecisionEffects:
        return DecisionEffects(upstream_url=self.upstream_url, authn=self.authn, webhooks=self.webhooks)

    async def decide(self, item_id: str, decision: DecisionName, moderator: str,
                     note: str | None = None) -> Decided:
        """Record the decision, then act on it once (a replayed decision does not act again)."""
        decided = await self.service.decide(item_id, decision, moderator, note)
        if decided.replayed or decision == "escalate":
            return decided
        row = await self.service.get_row(item_id)
        effects: dict[str, Any] = await self.effects().apply(decided, row)
        if effects:
            await self.service.record_effects(decided, effects)
        return Decided(decided.decision_id, decided.decision, decided.moderator, decided.item, False, effects)

    async def decide_group(self, group_id: str, decision: DecisionName, moderator: str,
                           note: str | None = None) -> list[Decided]:
        recorded = await self.service.decide_group(group_id, decision, moderator, note)
        out = []
        for decided in recorded:
            if decided.replayed or decision == "escalate":
                out.append(decided)
                continue
            row = await self.service.get_row(str(decided.item["id"]))
            effects = await self.effects().apply(decided, row)
            if effects:
                await self.service.record_effects(decided, effects)
            out.append(Decided(decided.decision_id, decided.decision, decided.moderator, decided.item, False,
                               effects))
        return out

    async def aclose(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.drain()
