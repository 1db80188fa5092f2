"""Decisions act (rules decide, sinks act): approving a held request forwards it to the backend
with its original identity; a ban suspends the tsgate account(s) and revokes their sessions (the
code path of the admin status endpoint); remove and ban are announced to the backend through a
signed webhook (``review.webhooks``). Every outcome is returned as data and stored with the
decision, so the audit log says what acting on it did.

Forwards and webhooks go through the durable outbox (``review.outbox``): the decision stands
whatever the backend does, and a forward the backend did not take (down, timeout, 5xx) is retried
with back-off — across restarts — until it is delivered or dead-lettered. Every attempt carries the
same ``X-Tsgate-Decision`` so a backend can de-duplicate a replay whose answer was lost."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from authn.runtime import AuthnRuntime
from gateway.core.errors import StoreError
from gateway.core.ids import new_decision_id
from moderation.records import ReviewItem
from moderation.sinks import UNSTORED_HEADERS
from review.http import HttpFailure, send
from review.outbox import Carried, Delivery, Outbox
from review.queue import Decided
from review.webhooks import WebhookSender

__all__ = ["FORWARD", "AccountLabels", "DecisionEffects", "ForwardCourier", "replay_headers"]

log = logging.getLogger("tsgate.review.effects")

FORWARD = "forward"  # the outbox event of an approved held request
_CONTENT_TYPE_DEFAULT = "application/octet-stream"


def replay_headers(request: dict[str, Any]) -> list[tuple[str, str]]:
    """The stored original headers that may be replayed (content type first)."""
    out: list[tuple[str, str]] = []
    seen_type = False
    for pair in request.get("headers") or []:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            continue
        name, value = str(pair[0]), str(pair[1])
        lower = name.lower()
        if lower in UNSTORED_HEADERS or lower.startswith("x-tsgate-") or not name or "\r" in value or "\n" in value:
            continue
        seen_type = seen_type or lower == "content-type"
        out.append((name, value))
    if not seen_type:
        out.insert(0, ("Content-Type", str(request.get("content_type") or _CONTENT_TYPE_DEFAULT)))
    return out


class ForwardCourier:
    """Carries an approved held request to the backend as its author (outbox event ``forward``).
    Retries connection failures, timeouts and 5xx answers; a 4xx is the backend's final word."""

    def __init__(self, rows: Callable[[str], Awaitable[ReviewItem | None]], *, upstream_url: Callable[[], str],
                 authn: Callable[[], AuthnRuntime | None], attempts: int = 8, backoff: float = 2.0,
                 timeout: float = 10.0) -> None:
        self._row = rows
        self._upstream = upstream_url
        self._authn = authn
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout

    async def carry(self, delivery: Delivery) -> Carried:
        row: ReviewItem | None = await self._row(delivery.item_id or "")
        if row is None or row.request is None:
            return Carried(False, error="the held request is gone", retry=False)
        decision_id = str(delivery.payload.get("decision_id") or new_decision_id())
        request = row.request
        body_spec = request.get("body") or {}
        if "text" in body_spec:
            body = str(body_spec["text"]).encode("utf-8")
        else:
            body = base64.b64decode(str(body_spec.get("base64", "")))
        target = str(request.get("path") or "/")
        if request.get("query"):
            target += "?" + str(request["query"])
        headers = [*replay_headers(request), ("X-Tsgate-Decision", decision_id), ("X-Tsgate-Review-Item", row.id),
                   *await identity_headers(self._authn(), row, decision_id)]
        try:
            result = await send(str(request.get("method") or "POST"), self._upstream().rstrip("/") + target, headers,
                                body, timeout=self.timeout)
        except HttpFailure as exc:
            log.warning("forwarding approved item %s failed (will retry): %s", row.id, exc)
            return Carried(False, error=str(exc)[:200])
        if 200 <= result.status < 300:
            return Carried(True, result.status)
        return Carried(False, result.status, f"HTTP {result.status}", retry=result.status >= 500)


async def identity_headers(authn: AuthnRuntime | None, row: ReviewItem, decision_id: str) -> list[tuple[str, str]]:
    """The author's identity as tsgate asserts it for live requests: X-Tsgate-User/-Roles (and a
    fresh assertion when the policy signs them), X-Forwarded-For with the author's address."""
    request = row.request or {}
    out: list[tuple[str, str]] = []
    client_ip = request.get("client_ip")
    if isinstance(client_ip, str) and client_ip:
        out.append(("X-Forwarded-For", client_ip))
        out.append(("X-Forwarded-Proto", "https" if request.get("scheme") == "https" else "http"))
    roles: tuple[str, ...] = ()
    if row.principal_kind == "user":  # a tsgate account: its current name and roles
        username = row.principal_id
        account = await authn.accounts.by_id(row.principal_id) if authn is not None else None
        if account is not None:
            username, roles = account.username, account.roles
    elif row.principal_kind == "external" and row.principal_id.count(":") >= 2:
        username = row.principal_id.split(":", 2)[2]  # ext:<authenticator>:<subject>
    else:  # anonymous: only the address it came from
        ip = row.principal_id.removeprefix("ip:")
        return out if out or not row.principal_id.startswith("ip:") else [("X-Forwarded-For", ip)]
    out += [("X-Tsgate-User", username), ("X-Tsgate-Roles", ",".join(sorted(roles)))]
    if authn is not None and authn.settings.assertion:
        assertion = authn.assertions.issue(row.principal_id, sorted(roles), decision_id, "reviewed",
                                           authn.settings.upstream_audience)
        out.append(("X-Tsgate-Assertion", assertion))
    return out


class AccountLabels(Protocol):
    """The fake-follower detectors' account labels (``followers.LabelStore``)."""

    async def clear(self, actor: str) -> bool: ...


class DecisionEffects:
    def __init__(self, *, outbox: Outbox, upstream_url: str, authn: AuthnRuntime | None,
                 webhooks: WebhookSender | None, labels: AccountLabels | None = None) -> None:
        self.outbox = outbox
        self.upstream_url = upstream_url.rstrip("/")
        self.authn = authn
        self.webhooks = webhooks
        self.labels = labels

    async def apply(self, decided: Decided, row: ReviewItem) -> dict[str, Any]:
        """Act on a fresh (not replayed) decision; what happened, as JSON-able data."""
        out: dict[str, Any] = {}
        if decided.decision == "approve" and row.request is not None:
            out["forward"] = await self.forward(row, decided)
        if decided.decision == "ban_account":
            out["ban"] = await self.ban(row)
        if decided.decision in ("false_positive", "approve") and row.kind == "follow" and self.labels is not None:
            out["labels_cleared"] = await self.clear_labels(row)
        if decided.decision in ("remove", "ban_account") and self.webhooks is not None:
            event = "ban" if decided.decision == "ban_account" else "remove"
            out["webhook"] = await self.webhooks.submit(event, row.id, _event_payload(event, decided, row))
        return out

    async def forward(self, row: ReviewItem, decided: Decided) -> dict[str, Any]:
        """Commit the forward to the outbox, then make the first attempt now (the moderator sees
        its status); if the backend did not take it, the outbox retries it with back-off."""
        decision_id = new_decision_id()
        request = row.request or {}
        delivery_id = await self.outbox.enqueue(
            FORWARD, row.id, f"{self.upstream_url}{request.get('path') or '/'}"[:1024],
            {"decision_id": decision_id, "review_decision": decided.decision_id, "method": request.get("method"),
             "path": request.get("path")})
        state, carried = await self.outbox.attempt(delivery_id)
        out: dict[str, Any] = {"ok": state == "delivered", "state": state or "pending", "delivery": delivery_id,
                               "decision_id": decision_id}
        if carried is not None and carried.status is not None:
            out["status"] = carried.status
        if carried is not None and carried.error:
            out["error"] = carried.error[:200]
        return out

    async def clear_labels(self, row: ReviewItem) -> dict[str, Any]:
        """The allow side of a false positive on a follow item: the listed accounts lose their
        fake-follower label at once (so ``on_label: deny`` stops refusing them)."""
        assert self.labels is not None
        cleared: list[str] = []
        try:
            for account in [str(a) for a in (row.content or {}).get("accounts", [])][:1000]:
                if await self.labels.clear(account):
                    cleared.append(account)
        except StoreError as exc:
            log.warning("clearing follower labels for item %s failed: %s", row.id, exc)
            return {"cleared": cleared, "error": f"state store: {type(exc).__name__}"}
        return {"cleared": cleared}

    async def ban(self, row: ReviewItem) -> dict[str, Any]:
        """Ban the item's account (or every account of a cohort) and end their sessions."""
        if row.kind == "follow":
            subjects = [str(a) for a in (row.content or {}).get("accounts", [])]
        elif row.principal_kind == "user":
            subjects = [row.principal_id]
        else:
            subjects = []
        if self.authn is None:
            return {"banned": [], "unknown": subjects, "note": "no auth: section; the webhook tells the backend"}
        banned, unknown, revoked = [], [], 0
        for subject in subjects[:1000]:
            account = await self.authn.accounts.by_id(subject) or await self.authn.accounts.by_login(subject)
            if account is None:
                unknown.append(subject)
                continue
            await self.authn.accounts.set_status(account.id, "banned")
            revoked += await self.authn.sessions.revoke_account(account.id, "account banned")
            banned.append(account.username)
        return {"banned": banned, "unknown": unknown, "sessions_revoked": revoked}


def _event_payload(event: str, decided: Decided, row: ReviewItem) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event": event, "review_item": row.id, "review_decision": decided.decision_id,
        "gateway_decision": row.decision_id, "kind": row.kind, "rule": row.rule_id,
        "principal": {"id": row.principal_id, "kind": row.principal_kind}, "moderator": decided.moderator,
    }
    if row.kind == "follow":
        payload["accounts"] = list((row.content or {}).get("accounts", []))[:1000]
    if row.request is not None:
        payload["request"] = {"method": row.request.get("method"), "path": row.request.get("path")}
    json.dumps(payload)  # JSON-able by construction; fail here, not in the sender
    return payload
