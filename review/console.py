"""The moderator console: server-rendered pages (Jinja2, autoescaped) under ``/console`` on the
admin listener. Works without JavaScript (plain forms and links); ``console.js`` adds keyboard
shortcuts. Nothing is loaded from elsewhere (CSP ``default-src 'self'``).

Sign-in checks a tsgate account's password (the login abuse tracker counts failures, as at
``{prefix}auth/login``), requires role ``moderator`` or ``admin``, and starts a tsgate session: its
access token and refresh token are HttpOnly, SameSite=Strict cookies (the refresh token only for
``/console/``). When the access token runs out, ``/console/refresh`` rotates the session with
tsgate's own refresh (reuse detection included), so a ban, a logout or a revoked family ends the
console session too.
Every cookie-authenticated POST carries the CSRF token bound to the session (``review.auth``); a
cross-origin ``Origin`` header is refused as well (sign-in has no session yet to bind a token to)."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from authn.passwords import normalize_login
from authn.runtime import AuthResult
from authn.sessions import TokenPair
from review.api import ReviewProblem, problem, runtime_of
from review.auth import COOKIE, MODERATOR_ROLES, Moderator, csrf_ok, csrf_token, identify
from review.errors import ReviewError
from review.queue import DecisionName, ItemFilter

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["install_console"]

HERE = Path(__file__).resolve().parent
MAX_FORM = 64 * 1024
DECISIONS: list[tuple[str, str, str]] = [("approve", "Approve", "a"), ("remove", "Remove", "r"),
                                         ("ban_account", "Ban account", "b"),
                                         ("false_positive", "False positive", "f"), ("escalate", "Escalate", "e")]
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
REFRESH_COOKIE = "tsgate_console_refresh"
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}

_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def _excerpt(item: dict[str, Any]) -> str:
    content = item.get("content") or {}
    fields = content.get("fields") or []
    if fields:
        text = str(fields[0].get("text", ""))
    elif item.get("kind") == "appeal":
        text = "Appeal: " + str(content.get("message", ""))
    else:
        text = str(content.get("summary", ""))
    return text if len(text) <= 120 else text[:117] + "…"


def _render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("moderator", None)
    context.setdefault("csrf", "")
    html = _env.get_template(name).render(excerpt=_excerpt, **context)
    return HTMLResponse(html, status, headers=HEADERS)


def _redirect(to: str, flash: str | None = None) -> RedirectResponse:
    if flash:
        to += ("&" if "?" in to else "?") + urlencode({"flash": flash})
    return RedirectResponse(to, 303, headers=HEADERS)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM:
        raise ReviewProblem(413, "console.form_too_large", "The form is too large.")
    parsed = parse_qs(body.decode("utf-8", "replace"), max_num_fields=20)
    return {k: v[0] for k, v in parsed.items()}


def install_console(app: FastAPI, gateway: Gateway, admin_token: str | None) -> None:
    router = APIRouter(prefix="/console", include_in_schema=False)

    async def signed_in(request: Request) -> Moderator | None:
        found = await identify(gateway.authn, None, None, request.cookies.get(COOKIE))
        return found if isinstance(found, Moderator) else None

    async def write(request: Request) -> tuple[Moderator, dict[str, str]] | Response:
        """A cookie-authenticated form post: signed in, same origin, valid CSRF token."""
        if not _same_origin(request):
            return problem(403, "review.csrf", "Cross-origin form posts are refused.")
        who = await signed_in(request)
        if who is None:
            return _signed_out(request)
        form = await _form(request)
        if not csrf_ok(who, form.get("csrf_token")):
            return problem(403, "review.csrf", "The form's CSRF token is missing or wrong; reload the page.")
        return who, form

    def page(who: Moderator, name: str, request: Request, **context: Any) -> HTMLResponse:
        return _render(name, moderator=who, csrf=csrf_token(who.session_token),
                       flash=request.query_params.get("flash"), **context)

    @router.get("")
    async def root() -> Response:
        return _redirect("/console/")

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            return problem(404, "console.not_found", "No such file.")
        return FileResponse(HERE / "static" / name, media_type=STATIC[name],
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=300"})

    @router.get("/login")
    async def login_page(request: Request) -> Response:
        if await signed_in(request) is not None:
            return _redirect("/console/")
        return _render("login.html")

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not _same_origin(request):
            return problem(403, "review.csrf", "Cross-origin sign-in is refused.")
        authn = gateway.authn
        if authn is None:
            return _render("login.html", 404, error="The policy has no auth: section; use the API with the "
                                                   "admin token.")
        form = await _form(request)
        login_name, password = form.get("username", "")[:254], form.get("password", "")[:4096]
        client = request.client.host if request.client else "unknown"
        verdict = await authn.abuse.attempt(normalize_login(login_name), client)
        if verdict.kind in ("locked", "ip_blocked", "challenge"):
            return _render("login.html", 429, error="Too many failed sign-ins; try again later.")
        account = await authn.accounts.by_login(login_name) if login_name else None
        password = unicodedata.normalize("NFKC", password)
        if account is None:
            await authn.hasher.verify_dummy(password)
            ok = False
        else:
            ok = (await authn.hasher.verify(account.password_hash, password))[0] and account.is_active
        if not ok or account is None:
            await authn.abuse.record_failure(normalize_login(login_name), client)
            return _render("login.html", 401, error="Wrong username or password.")
        if not MODERATOR_ROLES & set(account.roles):
            return _render("login.html", 403, error="This account is not a moderator.")
        await authn.abuse.record_success(normalize_login(login_name))
        pair = await authn.sessions.start(account)
        return _with_session(_redirect("/console/"), pair, request, authn.settings.refresh_ttl)

    @router.get("/refresh")
    async def refresh(request: Request) -> Response:
        """The access token ran out: rotate the session's refresh token (tsgate's own rotation and
        reuse detection) and go back to ``next``. A banned or logged-out session fails here."""
        target = request.query_params.get("next", "/console/")
        if not target.startswith("/console/") or "//" in target or "\\" in target:
            target = "/console/"
        authn = gateway.authn
        token = request.cookies.get(REFRESH_COOKIE, "")
        pair = await authn.sessions.refresh(token) if authn is not None and 0 < len(token) <= 4096 else None
        if pair is None or authn is None:
            response = _redirect("/console/login")
            response.delete_cookie(COOKIE, path="/")
            response.delete_cookie(REFRESH_COOKIE, path="/console/")
            return response
        return _with_session(_redirect(target), pair, request, authn.settings.refresh_ttl)

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        """End the tsgate session (its refresh family and this access token), then the cookies."""
        checked = await write(request)
        if isinstance(checked, Response):
            return checked
        authn = gateway.authn
        if authn is not None:
            claims = await authn.verify_access(checked[0].session_token)
            if not isinstance(claims, AuthResult):
                await authn.sessions.logout(claims, everywhere=False)
        response = _redirect("/console/login")
        response.delete_cookie(COOKIE, path="/")
        response.delete_cookie(REFRESH_COOKIE, path="/console/")
        return response

    @router.get("/")
    async def queue(request: Request) -> Response:
        who = await signed_in(request)
        if who is None:
            return _signed_out(request)
        q = request.query_params
        state = q.get("state", "open") or None
        f = ItemFilter(kind=q.get("kind") or None, rule=q.get("rule") or None,
                       state=state if state in ("open", "claimed", "resolved") else None,  # type: ignore[arg-type]
                       min_score=_float(q.get("min_score")), older_than=_float(q.get("older_than")))
        offset, limit = _offset(q.get("offset")), 50
        items, total = await runtime_of(gateway).service.list_items(f, limit=limit, offset=offset)

        def page_url(to: int) -> str:
            return "/console/?" + urlencode({**dict(q), "offset": max(0, to)})

        return page(who, "queue.html", request, items=items, total=total, f=f, offset=offset, limit=limit,
                    page_url=page_url)

    @router.post("/claim")
    async def claim_next(request: Request) -> Response:
        checked = await write(request)
        if isinstance(checked, Response):
            return checked
        who, _ = checked
        item = await runtime_of(gateway).service.claim_next(who.name)
        if item is None:
            return _redirect("/console/", "Nothing to claim.")
        return _redirect(f"/console/items/{item['id']}", "Claimed; it is yours until the lease ends.")

    @router.get("/items/{item_id}")
    async def item(item_id: str, request: Request) -> Response:
        who = await signed_in(request)
        if who is None:
            return _signed_out(request)
        service = runtime_of(gateway).service
        try:
            found = await service.get(item_id)
        except ReviewError as exc:
            return page(who, "queue.html", request, items=[], total=0, f=ItemFilter(), offset=0, limit=50,
                        page_url=lambda to: "/console/", error=str(exc))
        history, total = await service.list_items(ItemFilter(principal=found["principal_id"]), limit=21)
        mine = [h for h in history if h["id"] != item_id][:20]
        deliveries = await runtime_of(gateway).outbox.deliveries(None, 20, item_id=item_id)
        return page(who, "item.html", request, item=found, decisions=DECISIONS, history=mine,
                    history_total=total - 1, deliveries=deliveries)

    @router.post("/items/{item_id}/claim")
    async def claim(item_id: str, request: Request) -> Response:
        checked = await write(request)
        if isinstance(checked, Response):
            return checked
        try:
            await runtime_of(gateway).service.claim(item_id, checked[0].name)
        except ReviewError as exc:
            return _redirect(f"/console/items/{item_id}", str(exc))
        return _redirect(f"/console/items/{item_id}", "Claimed.")

    @router.post("/items/{item_id}/decide")
    async def decide(item_id: str, request: Request) -> Response:
        checked = await write(request)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        decision = _decision(form.get("decision"))
        if decision is None:
            return problem(400, "review.bad_decision", "Pick one of the decision buttons.")
        try:
            decided = await runtime_of(gateway).decide(item_id, decision, who.name, form.get("note") or None)
        except ReviewError as exc:
            return _redirect(f"/console/items/{item_id}", str(exc))
        message = f"Decided: {decision}" + (" (already recorded)" if decided.replayed else "")
        forward = decided.effects.get("forward")
        if forward and forward.get("state") == "delivered":
            message += f"; forwarded to the backend: HTTP {forward.get('status')}"
        elif forward:
            answer = f"HTTP {forward['status']}" if "status" in forward else forward.get("error", "no answer")
            message += (f"; the backend did not take the forward ({answer}): "
                        + ("retrying in the background" if forward.get("state") == "pending" else "dead-lettered"))
        return _redirect(f"/console/items/{item_id}", message)

    @router.get("/groups/{group_id}")
    async def group(group_id: str, request: Request) -> Response:
        who = await signed_in(request)
        if who is None:
            return _signed_out(request)
        items, _ = await runtime_of(gateway).service.list_items(ItemFilter(group=group_id), limit=500)
        open_count = sum(1 for i in items if i["state"] != "resolved")
        return page(who, "group.html", request, group_id=group_id, items=items, open_count=open_count,
                    decisions=DECISIONS)

    @router.post("/groups/{group_id}/decide")
    async def decide_group(group_id: str, request: Request) -> Response:
        checked = await write(request)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        decision = _decision(form.get("decision"))
        if decision is None:
            return problem(400, "review.bad_decision", "Pick one of the decision buttons.")
        try:
            decided = await runtime_of(gateway).decide_group(group_id, decision, who.name, form.get("note") or None)
        except ReviewError as exc:
            return _redirect(f"/console/groups/{group_id}", str(exc))
        return _redirect(f"/console/groups/{group_id}", f"Decided {len(decided)} items: {decision}")

    @router.get("/audit")
    async def audit(request: Request) -> Response:
        who = await signed_in(request)
        if who is None:
            return _signed_out(request)
        entries = await runtime_of(gateway).service.audit_log(item_id=request.query_params.get("item_id") or None,
                                                            limit=200)
        return page(who, "audit.html", request, entries=entries)

    @router.get("/webhooks")
    async def webhooks(request: Request) -> Response:
        who = await signed_in(request)
        if who is None:
            return _signed_out(request)
        runtime = runtime_of(gateway)
        dead = await runtime.outbox.deliveries("dead")
        pending = await runtime.outbox.deliveries("pending")
        recent = await runtime.outbox.deliveries(None, 50)
        return page(who, "webhooks.html", request, dead=dead, pending=pending, recent=recent,
                    configured=runtime.webhooks is not None)

    @router.post("/webhooks/{delivery_id}/retry")
    async def retry(delivery_id: str, request: Request) -> Response:
        checked = await write(request)
        if isinstance(checked, Response):
            return checked
        outbox = runtime_of(gateway).outbox
        try:
            if len(delivery_id) > 32:
                raise KeyError(delivery_id)
            if outbox.courier((await outbox.get(delivery_id))["event"]) is None:
                return _redirect("/console/webhooks", "No webhook configured.")
            state = await outbox.retry_now(delivery_id)
        except KeyError:
            return _redirect("/console/webhooks", "No such delivery.")
        await runtime_of(gateway).service.audit("webhook_retry", checked[0].name, None,
                                              {"delivery": delivery_id, "state": state})
        return _redirect("/console/webhooks", f"Retried: {state}")

    @router.get("/stats")
    async def stats(request: Request) -> Response:
        who = await signed_in(request)
        if who is None:
            return _signed_out(request)
        return page(who, "stats.html", request, stats=await runtime_of(gateway).service.stats())

    app.include_router(router)


def _with_session(response: Response, pair: TokenPair, request: Request, refresh_ttl: float) -> Response:
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, pair.access_token, max_age=int(refresh_ttl), path="/", httponly=True,
                        samesite="strict", secure=secure)
    response.set_cookie(REFRESH_COOKIE, pair.refresh_token, max_age=int(refresh_ttl), path="/console/",
                        httponly=True, samesite="strict", secure=secure)
    return response


def _signed_out(request: Request) -> Response:
    """No valid access token: refresh the session if there is one (back to this page), else sign in."""
    if request.cookies.get(REFRESH_COOKIE):
        here = request.url.path if request.method == "GET" else "/console/"
        if request.url.query and request.method == "GET":
            here += "?" + request.url.query
        return _redirect("/console/refresh?" + urlencode({"next": here}))
    return _redirect("/console/login")


def _offset(value: str | None) -> int:
    try:
        return min(max(0, int(value or 0)), 10_000_000)
    except ValueError:
        return 0


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _decision(value: str | None) -> DecisionName | None:
    for name, _, _ in DECISIONS:
        if value == name:
            return name  # type: ignore[return-value]
    return None
