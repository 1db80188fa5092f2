"""The moderator console over plain HTTP (no JavaScript): sign-in by role, session cookie
attributes, CSRF on every cookie-authenticated write (forms and the API), cross-origin posts
refused, pages escape content, and a decision made with a form acts like one made with the API."""

from __future__ import annotations

import html
import http.client
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.conftest import Backend, GatewayProc, Response, policy_text, request
from tests.review.helpers import (
    PASSWORD,
    ROUTES,
    SPAM,
    Receiver,
    backend_token,
    comment,
    create_account,
    new_post,
    receiver,
    start,
)


@pytest.fixture
def hook() -> Iterator[Receiver]:
    yield from receiver()


@pytest.fixture
def gw(backend: Backend, start_gateway: Callable[..., GatewayProc], tmp_path: Path, hook: Receiver) -> GatewayProc:
    gw = start(start_gateway, policy_text(backend.port, ROUTES.format(db=tmp_path / "review.db", webhook=hook.url)))
    create_account(gw, "mia", role="moderator")
    return gw


def form(gw: GatewayProc, path: str, fields: dict[str, str], cookie: str | None = None,
         origin: str | None = None) -> Response:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = cookie
    if origin:
        headers["Origin"] = origin
    return request(gw.admin_port, "POST", path, body=urlencode(fields).encode(), headers=headers)


def cookies_of(path: str, gw: GatewayProc, fields: dict[str, str] | None = None,
               cookie: str | None = None) -> tuple[int, dict[str, str], dict[str, str]]:
    """Status, headers and every Set-Cookie (name -> full header) of one exchange."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.admin_port, timeout=10)
    try:
        headers = {"Cookie": cookie} if cookie else {}
        if fields is None:
            conn.request("GET", path, headers=headers)
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request("POST", path, body=urlencode(fields).encode(), headers=headers)
        resp = conn.getresponse()
        resp.read()
        set_cookies = {v.split("=", 1)[0]: v for k, v in resp.getheaders() if k.lower() == "set-cookie"}
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, set_cookies
    finally:
        conn.close()


def sign_in(gw: GatewayProc, username: str = "mia") -> str:
    """The Cookie header of a fresh console session (access and refresh cookies)."""
    status, _, set_cookies = cookies_of("/console/login", gw, {"username": username, "password": PASSWORD})
    assert status == 303, set_cookies
    for name in ("tsgate_console", "tsgate_console_refresh"):
        assert "HttpOnly" in set_cookies[name] and "samesite=strict" in set_cookies[name].lower()
    assert "Path=/console/" in set_cookies["tsgate_console_refresh"]
    return "; ".join(v.split(";", 1)[0] for v in set_cookies.values())


def page(gw: GatewayProc, path: str, cookie: str) -> tuple[int, str]:
    response = request(gw.admin_port, "GET", path, headers={"Cookie": cookie})
    return response.status, response.body.decode()


def csrf(text: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', text)
    assert match, text[:500]
    return match.group(1)


def test_sign_in_needs_the_moderator_role_and_the_right_password(gw: GatewayProc) -> None:
    """Wrong password: 401; an account without the role: 403; no cookie: redirected to sign-in."""
    create_account(gw, "plain")
    assert form(gw, "/console/login", {"username": "mia", "password": "nope"}).status == 401
    assert form(gw, "/console/login", {"username": "plain", "password": PASSWORD}).status == 403
    anonymous = request(gw.admin_port, "GET", "/console/")
    assert anonymous.status == 303 and anonymous.headers["location"] == "/console/login"
    status, text = page(gw, "/console/", sign_in(gw))
    assert status == 200 and 'id="moderator-name">mia<' in text
    login_page = request(gw.admin_port, "GET", "/console/login")
    assert "default-src 'self'" in login_page.headers["content-security-policy"]
    assert "http" not in re.sub(r'lang="en"', "", login_page.body.decode()).replace("http-equiv", "")


def test_cookie_writes_need_the_csrf_token_and_cross_origin_posts_are_refused(gw: GatewayProc) -> None:
    """A form without the token, with another session's token, or from another origin is refused;
    the API also refuses cookie-authenticated writes without X-CSRF-Token."""
    post_id = new_post(gw)
    assert comment(gw, post_id, SPAM, {"Authorization": f"Token {backend_token('alice')}"}).status == 202
    cookie = sign_in(gw)
    status, text = page(gw, "/console/", cookie)
    item_id = re.search(r'data-item="([0-9a-f]{32})"', text).group(1)  # type: ignore[union-attr]
    token = csrf(text)
    path = f"/console/items/{item_id}/decide"
    missing = form(gw, path, {"decision": "remove"}, cookie)
    assert missing.status == 403 and missing.json()["reason"] == "review.csrf"
    other = csrf(page(gw, "/console/", sign_in(gw))[1])
    assert other != token and form(gw, path, {"decision": "remove", "csrf_token": other}, cookie).status == 403
    cross = form(gw, path, {"decision": "remove", "csrf_token": token}, cookie, origin="https://evil.example")
    assert cross.status == 403
    api_write = request(gw.admin_port, "POST", f"/review/items/{item_id}/claim", headers={"Cookie": cookie})
    assert api_write.status == 403 and api_write.json()["reason"] == "review.csrf"
    api_ok = request(gw.admin_port, "POST", f"/review/items/{item_id}/claim",
                     headers={"Cookie": cookie, "X-CSRF-Token": token})
    assert api_ok.status == 200 and api_ok.json()["lease_owner"] == "mia"
    assert page(gw, f"/console/items/{item_id}", cookie)[1].count("resolved") == 0  # nothing was decided

    done = form(gw, path, {"decision": "remove", "csrf_token": token, "note": "<b>spam</b>"}, cookie)
    assert done.status == 303
    status, detail = page(gw, f"/console/items/{item_id}", cookie)
    assert status == 200 and "remove by mia" in detail
    assert "&lt;b&gt;spam&lt;/b&gt;" in detail and "<b>spam</b>" not in detail
    _, audit = page(gw, "/console/audit", cookie)
    assert "decide:remove" in audit and item_id[:8] in audit


def test_pages_escape_hostile_content(gw: GatewayProc) -> None:
    """A held comment with markup is shown as text on the queue and item pages."""
    post_id = new_post(gw)
    hostile = SPAM + ' <script>alert("x")</script><img src=x onerror=alert(1)>'
    assert comment(gw, post_id, hostile, {"Authorization": f"Token {backend_token('alice')}"}).status == 202
    cookie = sign_in(gw)
    _, text = page(gw, "/console/?state=open", cookie)
    assert "<script>alert" not in text and "<img src=x" not in text
    item_id = re.search(r'data-item="([0-9a-f]{32})"', text).group(1)  # type: ignore[union-attr]
    for query in ("offset=inf", "offset=1e999", "offset=-5", "min_score=nan", "older_than=inf", "state=%00",
                  "kind=" + "x" * 3000, "rule=%F0%9F"):
        status, body = page(gw, "/console/?" + query, cookie)
        assert status == 200, (query, body[:300])
    assert page(gw, "/console/items/" + "y" * 400, cookie)[0] == 200  # "no such item" on the queue page
    _, detail = page(gw, f"/console/items/{item_id}", cookie)
    assert html.escape(hostile, quote=False) in detail.replace("&#34;", '"').replace("&quot;", '"')
    assert "<script>alert" not in detail


def test_an_expired_access_cookie_is_renewed_and_sign_out_ends_the_session(gw: GatewayProc) -> None:
    """Without a valid access cookie the refresh cookie renews the session (back to the same page);
    after signing out, the old refresh cookie no longer works and the API refuses the old cookie."""
    cookie = sign_in(gw)
    refresh_only = next(c for c in cookie.split("; ") if c.startswith("tsgate_console_refresh="))
    status, headers, _ = cookies_of("/console/audit", gw, cookie=refresh_only)
    assert status == 303 and headers["location"] == "/console/refresh?next=%2Fconsole%2Faudit"
    status, headers, renewed = cookies_of(headers["location"], gw, cookie=refresh_only)
    assert status == 303 and headers["location"] == "/console/audit" and set(renewed) == {
        "tsgate_console", "tsgate_console_refresh"}
    new_cookie = "; ".join(v.split(";", 1)[0] for v in renewed.values())
    assert page(gw, "/console/audit", new_cookie)[0] == 200
    evil = cookies_of("/console/refresh?next=//evil.example/", gw, cookie=new_cookie)[1]
    assert evil["location"] in ("/console/", "/console/login")  # never off-site

    token = csrf(page(gw, "/console/", new_cookie)[1])
    assert form(gw, "/console/logout", {"csrf_token": token}, new_cookie).status == 303
    assert request(gw.admin_port, "GET", "/review/items", headers={"Cookie": new_cookie}).status == 401
    status, headers, _ = cookies_of("/console/refresh?next=/console/", gw, cookie=new_cookie)
    assert status == 303 and headers["location"] == "/console/login"
