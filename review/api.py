"""The moderator API on the admin listener (FastAPI; documented in /docs and /openapi.json).

``install(app, gateway, admin_token)`` mounts it under ``/review`` and turns review errors into
problem+json with stable reason ids: ``review.unauthorized`` (401), ``review.forbidden`` (403),
``review.csrf`` (403), ``review.not_found`` (404), ``review.lease_held`` / ``review.already_decided``
(409), ``review.decision_not_allowed`` (422), ``review.disabled`` (404), ``review.unavailable`` (503)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.core.errors import StoreError
from gateway.core.ids import new_decision_id
from gateway.core.problem import problem_body
from review.auth import COOKIE, Moderator, csrf_ok, identify
from review.errors import ReviewError
from review.queue import DecisionName, ItemFilter, decisions_of
from review.runtime import ReviewRuntime

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["ReviewProblem", "install", "problem", "runtime_of"]


class ReviewProblem(Exception):
    def __init__(self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail, self.headers = status, reason, detail, headers or {}


def problem(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    decision_id = new_decision_id()
    return Response(problem_body(status, reason, decision_id, detail), status,
                    headers={"tsgate-decision": decision_id, "cache-control": "no-store", **(headers or {})},
                    media_type="application/problem+json")


_REFUSALS = {
    "review.unauthorized": (401, "Sign in: a moderator's tsgate access token (Bearer) or the admin token."),
    "review.forbidden": (403, "This account has neither the moderator nor the admin role."),
    "review.unavailable": (503, "Sessions cannot be checked right now; retry."),
}


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "remove", "ban_account", "false_positive", "escalate"]
    note: str | None = Field(None, max_length=4000)


class ClaimBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["content", "follow", "appeal"] | None = None
    rule: str | None = Field(None, max_length=128)
    group: str | None = Field(None, max_length=64)


def runtime_of(gateway: Gateway) -> ReviewRuntime:
    runtime = getattr(gateway, "review", None)
    if runtime is None:
        raise ReviewProblem(404, "review.disabled", "The review queue needs a database (moderation, followers "
                            "or auth in the policy).")
    assert isinstance(runtime, ReviewRuntime)
    return runtime


async def moderator(request: Request, authorization: Annotated[str | None, Header()] = None,
                    x_csrf_token: Annotated[str | None, Header()] = None) -> Moderator:
    """The caller, or a 401/403 problem; cookie-authenticated writes must carry the CSRF token."""
    gateway, admin_token = request.app.state.review_gateway, request.app.state.review_admin_token
    found = await identify(gateway.authn, admin_token, authorization, request.cookies.get(COOKIE))
    if isinstance(found, str):
        status, detail = _REFUSALS[found]
        headers = {"WWW-Authenticate": 'Bearer realm="tsgate-review"'} if status == 401 else None
        raise ReviewProblem(status, found, detail, headers)
    if request.method not in ("GET", "HEAD") and not csrf_ok(found, x_csrf_token):
        raise ReviewProblem(403, "review.csrf", "Cookie-authenticated writes need the X-CSRF-Token header.")
    return found


Mod = Annotated[Moderator, Depends(moderator)]


def install(app: FastAPI, gateway: Gateway, admin_token: str | None) -> None:
    """Mount the API (and its error handlers) on the admin app."""
    app.state.review_gateway = gateway
    app.state.review_admin_token = admin_token

    @app.exception_handler(ReviewProblem)
    async def _on_problem(request: Request, exc: ReviewProblem) -> Response:
        return problem(exc.status, exc.reason, exc.detail, exc.headers)

    @app.exception_handler(ReviewError)
    async def _on_review(request: Request, exc: ReviewError) -> Response:
        return problem(exc.status, exc.reason, str(exc))

    @app.exception_handler(StoreError)
    async def _on_store(request: Request, exc: StoreError) -> Response:
        if not request.url.path.startswith(("/review/", "/console/")):  # other endpoints: as before
            return problem(500, "admin.internal_error", "Unexpected error; see the gateway log.")
        return problem(503, "review.unavailable", "The review database is unavailable; retry.",
                       {"Retry-After": "1"})

    router = APIRouter(prefix="/review", tags=["review"])

    @router.get("/items")
    async def list_items(
        who: Mod,
        kind: Literal["content", "follow", "appeal"] | None = None,
        rule: Annotated[str | None, Query(max_length=128)] = None,
        state: Literal["open", "claimed", "resolved"] | None = None,
        group: Annotated[str | None, Query(max_length=64)] = None,
        min_score: float | None = None, max_score: float | None = None,
        older_than: Annotated[float | None, Query(ge=0, description="seconds")] = None,
        newer_than: Annotated[float | None, Query(ge=0, description="seconds")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Items, highest priority first, then oldest; ``total`` counts every match."""
        f = ItemFilter(kind, rule, state, group, min_score, max_score, older_than, newer_than)
        items, total = await runtime_of(gateway).service.list_items(f, limit=limit, offset=offset)
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    @router.get("/items/{item_id}")
    async def get_item(item_id: str, who: Mod) -> dict[str, Any]:
        return await runtime_of(gateway).service.get(item_id)

    @router.post("/claim", responses={204: {"description": "Nothing to claim"}})
    async def claim_next(who: Mod, body: ClaimBody | None = None) -> Response:
        """Lease the most urgent open item (or one whose lease ran out) to the caller."""
        body = body or ClaimBody()
        item = await runtime_of(gateway).service.claim_next(who.name, ItemFilter(body.kind, body.rule,
                                                                               group=body.group))
        return Response(status_code=204) if item is None else JSONResponse(item)

    @router.post("/items/{item_id}/claim")
    async def claim(item_id: str, who: Mod) -> dict[str, Any]:
        return await runtime_of(gateway).service.claim(item_id, who.name)

    @router.post("/items/{item_id}/release")
    async def release(item_id: str, who: Mod) -> dict[str, Any]:
        return await runtime_of(gateway).service.release(item_id, who.name)

    @router.post("/items/{item_id}/decision")
    async def decide(item_id: str, body: DecisionBody, who: Mod) -> dict[str, Any]:
        """Decide one item. Repeating the same decision is idempotent (``replayed: true``)."""
        decided = await runtime_of(gateway).decide(item_id, _decision(body.decision), who.name, body.note)
        return {"decision_id": decided.decision_id, "decision": decided.decision, "moderator": decided.moderator,
                "replayed": decided.replayed, "effects": decided.effects, "item": decided.item}

    @router.post("/groups/{group_id}/decision")
    async def decide_group(group_id: str, body: DecisionBody, who: Mod) -> dict[str, Any]:
        """One decision for every unresolved item of a grouped job (a cohort or a campaign)."""
        decided = await runtime_of(gateway).decide_group(group_id, _decision(body.decision), who.name, body.note)
        return {"group_id": group_id, "decisions": decisions_of(decided)}

    @router.get("/stats")
    async def stats(who: Mod) -> dict[str, Any]:
        return await runtime_of(gateway).service.stats()

    @router.get("/audit")
    async def audit(who: Mod, item_id: Annotated[str | None, Query(max_length=32)] = None,
                    actor: Annotated[str | None, Query(max_length=128)] = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 100,
                    offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        """The append-only audit log, newest first."""
        entries = await runtime_of(gateway).service.audit_log(item_id=item_id, actor=actor, limit=limit,
                                                            offset=offset)
        return {"entries": entries}

    @router.get("/webhooks")
    async def webhooks(who: Mod, state: Literal["pending", "delivered", "dead"] | None = None,
                       event: Annotated[str | None, Query(max_length=32, description="remove, ban, forward")] = None,
                       item_id: Annotated[str | None, Query(max_length=32)] = None,
                       limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        """Outgoing deliveries — webhook events and forwards of approved held requests (event
        ``forward``); ``state=dead`` lists the dead letters, ``pending`` those being retried."""
        outbox = runtime_of(gateway).outbox
        return {"deliveries": await outbox.deliveries(state, limit, item_id=item_id, event=event)}

    @router.post("/webhooks/{delivery_id}/retry")
    async def retry(delivery_id: str, who: Mod) -> dict[str, Any]:
        """Retry a dead letter now with a fresh set of attempts (later ones run in the background)."""
        runtime = runtime_of(gateway)
        if len(delivery_id) > 32:
            raise ReviewProblem(404, "review.not_found", "No such delivery.")
        try:
            found = await runtime.outbox.get(delivery_id)
            if runtime.outbox.courier(found["event"]) is None:
                raise ReviewProblem(404, "review.no_webhook", "The policy has no review.webhook.")
            state = await runtime.outbox.retry_now(delivery_id)
        except KeyError:
            raise ReviewProblem(404, "review.not_found", f"No delivery {delivery_id!r}.") from None
        await runtime.service.audit("webhook_retry", who.name, None, {"delivery": delivery_id, "state": state})
        return {"id": delivery_id, "state": state}

    app.include_router(router)
    from review.console import install_console  # the console builds on this module

    install_console(app, gateway, admin_token)


def _decision(value: str) -> DecisionName:
    assert value in ("approve", "remove", "ban_account", "false_positive", "escalate")
    return value  # type: ignore[return-value]
