"""Decisions act (rules decide, sinks act): approving a held request forwards it to the backend
with its original identity; a ban suspends the tsgate account(s) and revokes their sessions (the
code path of the admin status endpoint); remove and ban are announced to the backend through a
signed webhook (``review.webhooks``). Every outcome is returned as data and stored with the
decision, so the audit log says what acting on it did."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from authn.runtime import AuthnRuntime
from gateway.core.ids import new_decision_id
from moderation.records import ReviewItem
from review.http import HttpFailure, send
from review.queue import Decided
from review.webhooks import WebhookSender

__all__ = ["DecisionEffects"]

log = logging.getLogger("tsgate.review.effects")

_CONTENT_TYPE_DEFAULT = "application/octet-stream"


class DecisionEffects:
    def __init__(self, *, upstream_url: str, authn: AuthnRuntime | None, webhooks: WebhookSender | None,
                 timeout: float = 10.0) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.authn = authn
        self.webhooks = webhooks
        self.timeout = timeout

    async def apply(self, decided: Decided, row: ReviewItem) -> dict[str, Any]:
        """Act on a fresh (not replayed) decision; what happened, as JSON-able data."""
        out: dict[str, Any] = {}
        if decided.decision == "approve" and row.request is not None:
            out["forward"] = await self.forward(row)
        if decided.decision == "ban_account":
            out["ban"] = await self.ban(row)
        if decided.decision in ("remove", "ban_account") and self.webhooks is not None:
            event = "ban" if decided.decision == "ban_account" else "remove"
            out["webhook"] = self.webhooks.submit(event, row.id, _event_payload(event, decided, row))
        return out

    async def _identity(self, row: ReviewItem, decision_id: str) -> list[tuple[str, str]]:
        roles: tuple[str, ...] = ()
        if row.principal_kind == "user":  # a tsgate account: its current name and roles
            username = row.principal_id
            account = await self.authn.accounts.by_id(row.principal_id) if self.authn is not None else None
            if account is not None:
                username, roles = account.username, account.roles
        elif row.principal_kind == "external" and row.principal_id.count(":") >= 2:
            username = row.principal_id.split(":", 2)[2]  # ext:<authenticator>:<subject>
        else:  # anonymous: the address it came from
            ip = row.principal_id.removeprefix("ip:")
            return [("X-Forwarded-For", ip)] if row.principal_id.startswith("ip:") else []
        headers = [("X-Tsgate-User", username), ("X-Tsgate-Roles", ",".join(sorted(roles)))]
        if self.authn is not None and self.authn.settings.assertion:
            assertion = self.authn.assertions.issue(row.principal_id, sorted(roles), decision_id, "reviewed",
                                                    self.authn.settings.upstream_audience)
            headers.append(("X-Tsgate-Assertion", assertion))
        return headers

    async def forward(self, row: ReviewItem) -> dict[str, Any]:
        """Send the held request on, as its author: method, path, query, content type, body."""
        request = row.request or {}
        decision_id = new_decision_id()
        body_spec = request.get("body") or {}
        if "text" in body_spec:
            body = str(body_spec["text"]).encode("utf-8")
        else:
            body = base64.b64decode(str(body_spec.get("base64", "")))
        target = str(request.get("path") or "/")
        if request.get("query"):
            target += "?" + str(request["query"])
        headers = [("Content-Type", str(request.get("content_type") or _CONTENT_TYPE_DEFAULT)),
                   ("X-Tsgate-Decision", decision_id), ("X-Tsgate-Review-Item", row.id),
                   *await self._identity(row, decision_id)]
        try:
            result = await send(str(request.get("method") or "POST"), self.upstream_url + target, headers, body,
                                timeout=self.timeout)
        except HttpFailure as exc:
            log.warning("forwarding approved item %s failed: %s", row.id, exc)
            return {"ok": False, "error": str(exc)[:200], "decision_id": decision_id}
        return {"ok": 200 <= result.status < 300, "status": result.status, "decision_id": decision_id}

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
