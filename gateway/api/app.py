"""The control plane: FastAPI on its own listener (default 127.0.0.1:9090), never the proxy port.

Open: /healthz, /readyz, /metrics (the listener is private by default). Bearer token: the
policy (view, validate, reload, versions)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from authn.runtime import AuthnRuntime
from gateway.api.auth import token_matches
from gateway.app import Gateway, PolicyVersion
from gateway.core.ids import new_decision_id
from gateway.core.problem import problem_body
from policies.loader import PolicyError, load_policy_text
from review.api import install as install_review

__all__ = ["create_admin_app"]


class _Problem(Exception):
    def __init__(self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        self.status, self.reason, self.detail, self.headers, self.extra = status, reason, detail, headers, extra


def _problem_response(status: int, reason: str, detail: str, headers: dict[str, str] | None = None,
                      **extra: Any) -> Response:
    decision_id = new_decision_id()
    body = problem_body(status, reason, decision_id, detail, **extra)
    out = {"tsgate-decision": decision_id, "cache-control": "no-store", **(headers or {})}
    return Response(body, status, headers=out, media_type="application/problem+json")


class RollbackTo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int


def create_admin_app(gateway: Gateway, token: str | None) -> FastAPI:
    app = FastAPI(title="tsgate admin", version="0.1.0", docs_url="/docs", redoc_url=None)

    @app.exception_handler(_Problem)
    async def _on_problem(request: Request, exc: _Problem) -> Response:
        return _problem_response(exc.status, exc.reason, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> Response:
        return _problem_response(400, "admin.bad_request", "The request is not valid.",
                                 errors=[{"loc": list(map(str, e["loc"])), "msg": e["msg"]} for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
        return _problem_response(exc.status_code, "admin.http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _on_bug(request: Request, exc: Exception) -> Response:
        return _problem_response(500, "admin.internal_error", "Unexpected error; see the gateway log.")

    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            raise _Problem(401, "admin.token_not_configured",
                           "Set TSGATE_ADMIN_TOKEN or TSGATE_ADMIN_TOKEN_FILE to use this endpoint.",
                           {"WWW-Authenticate": 'Bearer realm="tsgate-admin"'})
        if not token_matches(token, authorization):
            raise _Problem(401, "admin.unauthorized", "A valid admin bearer token is required.",
                           {"WWW-Authenticate": 'Bearer realm="tsgate-admin", error="invalid_token"'})

    admin = [Depends(require_admin)]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await gateway.ready()
        ready = all(checks.values()) and not gateway.draining
        return JSONResponse({"ready": ready, "draining": gateway.draining, "checks": checks},
                            status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/policy", dependencies=admin)
    async def policy() -> dict[str, Any]:
        compiled = gateway.compiled
        return {
            "sha256": compiled.sha256,
            "source": compiled.loaded.source,
            "version": gateway.versions[-1].version,
            "policy": compiled.policy.model_dump(mode="json"),
        }

    @app.get("/policy/versions", dependencies=admin)
    async def versions() -> list[dict[str, Any]]:
        return [{"version": v.version, "sha256": v.sha256, "source": v.source, "loaded_at": v.loaded_at,
                 "actor": v.actor} for v in gateway.versions]

    def _version(number: int) -> PolicyVersion:
        if not 1 <= number <= len(gateway.versions):
            raise _Problem(404, "policy.no_such_version", f"There is no policy version {number}.")
        found = gateway.versions[number - 1]
        if not found.text:
            raise _Problem(410, "policy.version_forgotten", f"Version {number} is too old; its text is gone.")
        return found

    @app.get("/policy/versions/{a}/diff/{b}", dependencies=admin)
    async def diff(a: int, b: int) -> dict[str, Any]:
        old, new = _version(a), _version(b)
        lines = difflib.unified_diff(old.text.splitlines(keepends=True), new.text.splitlines(keepends=True),
                                     fromfile=f"v{a} {old.sha256[:12]}", tofile=f"v{b} {new.sha256[:12]}")
        return {"from": a, "to": b, "diff": "".join(lines)}

    @app.post("/policy/rollback", dependencies=admin)
    async def rollback(target: RollbackTo, x_tsgate_actor: Annotated[str | None, Header()] = None) -> Response:
        """Put an earlier version back: its text is written to the policy file (atomically) and
        reloaded, so every worker and every later reload agrees with what is running."""
        chosen = _version(target.version)
        source = Path(gateway.compiled.loaded.source)
        actor = f"admin-api:rollback:{(x_tsgate_actor or 'unknown')[:64]}"
        try:
            load_policy_text(chosen.text, f"<version {target.version}>")
            tmp = source.with_name(f".{source.name}.rollback")
            tmp.write_text(chosen.text, encoding="utf-8")
            os.replace(tmp, source)
        except PolicyError as exc:  # e.g. a version whose key files are gone
            return _problem_response(422, "policy.invalid", "That version no longer loads.", problems=exc.problems)
        except OSError as exc:
            raise _Problem(409, "policy.file_not_writable",
                           f"Cannot write {source.name} ({exc.strerror}); roll back by editing the file.") from exc
        result = gateway.reload(actor=actor)
        if not result.ok:
            return _problem_response(422, "policy.invalid", "The rollback was not loaded; the running one stays.",
                                     problems=result.problems, running_sha256=result.sha256)
        notify = getattr(app.state, "on_reload", None)
        if notify is not None:
            notify()
        return JSONResponse({"loaded": True, "sha256": result.sha256, "version": gateway.versions[-1].version,
                             "restored": target.version})

    @app.get("/policy/shadow", dependencies=admin)
    async def shadow() -> dict[str, Any]:
        """Shadow and staged-rollout would-have counts per rule (this process, since it started)."""
        counts: dict[str, dict[str, float]] = {}
        for metric in gateway.metrics.shadow.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    rule, outcome = sample.labels["rule"], sample.labels["outcome"]
                    counts.setdefault(rule, {})[outcome] = sample.value
        return {"rules": counts}

    @app.post("/policy/validate", dependencies=admin)
    async def validate(text: Annotated[str, Body(media_type="application/yaml")]) -> Response:
        try:
            loaded = load_policy_text(text, "<request>")
        except PolicyError as exc:
            return _problem_response(422, "policy.invalid", "The policy is not valid.", problems=exc.problems)
        return JSONResponse({"valid": True, "sha256": loaded.sha256})

    @app.post("/policy/reload", dependencies=admin)
    async def reload() -> Response:
        # The file stays the one source of truth, so every worker and host reloads the same text.
        result = gateway.reload(actor="admin-api")
        if not result.ok:
            return _problem_response(422, "policy.invalid", "The policy was not loaded; the running one stays.",
                                     problems=result.problems, running_sha256=result.sha256)
        notify = getattr(app.state, "on_reload", None)
        if notify is not None:
            notify()
        return JSONResponse({"loaded": True, "sha256": result.sha256, "version": gateway.versions[-1].version})

    @app.get("/accounts/{login}", dependencies=admin)
    async def account(login: str) -> Response:
        authn = _authn()
        record = await authn.accounts.by_login(login) or await authn.accounts.by_id(login)
        if record is None:
            return _problem_response(404, "account.not_found", "No such account.")
        return JSONResponse({"id": record.id, "username": record.username, "email": record.email,
                             "status": record.status, "roles": list(record.roles)})

    @app.post("/accounts/{login}/status", dependencies=admin)
    async def account_status(login: str, change: StatusChange) -> Response:
        """Suspend, ban or reactivate an account; anything but active ends every session at once."""
        authn = _authn()
        record = await authn.accounts.by_login(login) or await authn.accounts.by_id(login)
        if record is None:
            return _problem_response(404, "account.not_found", "No such account.")
        await authn.accounts.set_status(record.id, change.status)
        revoked = 0
        if change.status != "active":
            revoked = await authn.sessions.revoke_account(record.id, f"account {change.status}")
        return JSONResponse({"id": record.id, "status": change.status, "sessions_revoked": revoked})

    install_review(app, gateway, token)  # /review/* (moderator API)

    def _authn() -> AuthnRuntime:
        if gateway.authn is None:
            raise _Problem(404, "account.no_identity", "The policy has no auth: section.")
        return gateway.authn

    return app


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["active", "suspended", "banned"]
