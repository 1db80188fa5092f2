"""``POST {prefix}appeals`` on the proxy listener: a user who was held or denied appeals by the
decision id tsgate gave them (``{"decision_id": ..., "message": ...}``). The appeal becomes a
queue item of kind ``appeal`` carrying the original item's id, action, content and evidence.

The decision id is a random capability (only its recipient saw it); when the original request was
made by a signed-in principal, only that principal may appeal it (others get the same 404 as an
unknown id). Appeals are rate-limited per principal and per client IP in the shared state store,
counted before the lookup so ids cannot be guessed cheaply. One appeal per decision: appealing
again returns the same item (the queue is unique per kind and decision id). An appeal is as urgent
as what it appeals: it carries the original item's priority (score x reach, ``review.priority``;
an escalation's boost is not inherited)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from authn.runtime import AuthnRuntime
from gateway.core.asgi import EndpointProblem, Receive, Send, read_json_object, send_json, send_problem
from gateway.core.context import RequestContext
from gateway.core.errors import StoreError
from gateway.core.state import StateStore, store_key
from moderation.errors import ReviewQueueError
from moderation.records import NewReviewItem, ReviewQueue
from review.priority import ESCALATION_BOOST
from review.runtime import ReviewRuntime

__all__ = ["AppealEndpoint"]

MAX_BODY = 8 * 1024
MAX_MESSAGE = 2000

Handler = Callable[[RequestContext, Receive, Send], Awaitable[int]]


class AppealEndpoint:
    def __init__(self, review: ReviewRuntime, store: StateStore, authn: Callable[[], AuthnRuntime | None],
                 prefix: str) -> None:
        self.review = review
        self.store = store
        self.authn = authn
        self.path = prefix + "appeals"
        self.queue = ReviewQueue(review.service.database)

    def routes(self) -> dict[str, Handler]:
        return {self.path: self.handle}

    async def handle(self, ctx: RequestContext, receive: Receive, send: Send) -> int:
        try:
            if ctx.method != "POST":
                raise EndpointProblem(405, "request.method_not_allowed", "Use POST.", (("Allow", "POST"),))
            status, body = await self._appeal(ctx, receive)
        except EndpointProblem as refused:
            await send_problem(send, refused.status, refused.reason, ctx.decision_id, refused.detail, refused.headers)
            return refused.status
        except (StoreError, ReviewQueueError):
            await send_problem(send, 503, "appeal.unavailable", ctx.decision_id, "Appeals are unavailable; retry.",
                               (("Retry-After", "5"),))
            return 503
        await send_json(send, status, body, ctx.decision_id)
        return status

    async def _appeal(self, ctx: RequestContext, receive: Receive) -> tuple[int, dict[str, Any]]:
        data = await self._json(ctx, receive)
        decision_id, message = data.get("decision_id"), data.get("message")
        if not isinstance(decision_id, str) or not 1 <= len(decision_id) <= 64:
            raise EndpointProblem(422, "request.invalid_field", "'decision_id' must be the id from the answer you got.",
                           )
        if not isinstance(message, str) or not 1 <= len(message) <= MAX_MESSAGE:
            raise EndpointProblem(422, "request.invalid_field", f"'message' must be 1-{MAX_MESSAGE} characters.")
        principal = await self._principal(ctx)
        settings = self.review.settings
        for key in {store_key("appeal", principal), store_key("appeal", f"ip:{ctx.client_ip}")}:
            if await self.store.incr(key, ttl=settings.appeal_window) > settings.appeal_limit:
                raise EndpointProblem(429, "appeal.rate_limited", "Too many appeals; try again later.",
                               (("Retry-After", str(int(settings.appeal_window))),))
        original = await self.review.service.by_decision_id(decision_id)
        if original is None or (original.principal_kind != "anonymous" and not original.principal_id.startswith("ip:")
                                and original.principal_id != principal):
            raise EndpointProblem(404, "appeal.unknown_decision", "No held or denied request has that decision id.")
        item = NewReviewItem(
            kind="appeal", action="appeal", rule_id=original.rule_id, decision_id=original.decision_id,
            principal_id=original.principal_id, principal_kind=original.principal_kind,
            content={"appeal_of": original.id, "message": message, "original_action": original.action,
                     "original_state": original.state, "original_resolution": original.resolution,
                     "original_content": original.content},
            symbols=list(original.symbols), score=original.score, priority=original.priority % ESCALATION_BOOST,
            created_at=datetime.fromtimestamp(self.review.service.clock.now(), UTC))
        appeal_id = await self.queue.enqueue(item)
        await self.review.service.audit("appeal", principal[:128], appeal_id, {"appeal_of": original.id})
        return 202, {"appeal_id": appeal_id, "appeal_of": decision_id, "state": "open"}

    async def _principal(self, ctx: RequestContext) -> str:
        authn = self.authn()
        if authn is not None and ctx.principal is None:
            result = await authn.authenticate(ctx)
            if result.presented and result.principal is None:
                raise EndpointProblem(401, "auth.invalid_token", "The credential is not valid.")
            ctx.principal = result.principal
        return ctx.who().id

    async def _json(self, ctx: RequestContext, receive: Receive) -> dict[str, Any]:
        return await read_json_object(ctx, receive, MAX_BODY)
