"""Approving a held request on a real `tsgate run` process: the backend receives the original
request — method, path, body and the client's own headers (content type, X-Client-*,
Accept-Language) — as its author (tsgate's identity headers), never the stripped credentials
(Authorization, Cookie, Proxy-Authorization, tsgate's own Tsgate-Clearance) or a client's
X-Tsgate-* copy. A backend that is down
when the moderator approves: the decision stands, the console shows the forward as retrying, and
a *restarted* gateway delivers it once the backend is up. A backend that keeps failing: the
forward is dead-lettered after its attempts, and a moderator's retry delivers it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, GatewayProc, free_port, policy_text, stop
from tests.review.helpers import (
    ROUTES,
    SPAM,
    SPAM_2,
    Recorder,
    api,
    backend_token,
    comment,
    create_account,
    start,
)
from tests.review.test_console import page, sign_in

ORIGINAL = {"Accept-Language": "fr-CH, fr;q=0.9", "X-Client-Version": "7.1 (android)", "Accept": "application/json",
            "Cookie": "session=s3cret-cookie", "Proxy-Authorization": "Basic c2VjcmV0", "X-Tsgate-User": "mallory",
            "Tsgate-Clearance": "v1.unused-clearance"}
NEVER = ("authorization", "cookie", "proxy-authorization", "tsgate-clearance")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    backend = Recorder(free_port())  # down until the test starts it
    yield backend
    backend.stop()


def wait_for(check: Callable[[], object], seconds: float = 15.0) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def forwarding_policy(recorder: Recorder, tmp_path: Path, forward: str) -> str:
    """The review routes in front of ``recorder`` with ``review.forward`` set to ``forward``."""
    return policy_text(recorder.port, ROUTES.format(db=tmp_path / "review.db", webhook="http://127.0.0.1:9/h")
                       ).replace("  appeal_limit: 3\n", f"  appeal_limit: 3\n  forward: {forward}\n")


def hold(gw: GatewayProc, text: str) -> str:
    headers = {"Authorization": f"Token {backend_token('alice')}", **ORIGINAL}
    response = comment(gw, 7, text, headers)
    assert response.status == 202, response.body
    (item,) = [i for i in api(gw, "GET", "/review/items?kind=content", ADMIN_TOKEN).json()["items"]
               if i["decision_id"] == response.json()["decision_id"]]
    return str(item["id"])


def test_an_approval_while_the_backend_is_down_is_delivered_faithfully_after_a_restart(
        start_gateway: Callable[..., GatewayProc], tmp_path: Path, recorder: Recorder) -> None:
    """Stored without credentials; approve → pending (console: retrying); restart + backend up →
    the backend gets the original headers and body as alice, and no credential."""
    policy = forwarding_policy(recorder, tmp_path, "{attempts: 6, backoff: 200ms, timeout: 2s}")
    gw = start(start_gateway, policy)
    create_account(gw, "mia", role="moderator")
    item_id = hold(gw, SPAM)
    stored = api(gw, "GET", f"/review/items/{item_id}", ADMIN_TOKEN).json()["request"]
    names = {name for name, _ in stored["headers"]}
    assert {"accept-language", "x-client-version", "accept", "content-type"} <= names
    assert not names & {*NEVER, "x-tsgate-user"}
    assert "s3cret" not in json.dumps(stored) and backend_token("alice") not in json.dumps(stored)

    approved = api(gw, "POST", f"/review/items/{item_id}/decision", ADMIN_TOKEN, {"decision": "approve"})
    assert approved.status == 200, approved.body
    forward = approved.json()["effects"]["forward"]
    assert forward["state"] == "pending" and "ConnectionRefusedError" in forward["error"]
    assert approved.json()["item"]["state"] == "resolved"  # the decision stands
    _, html = page(gw, f"/console/items/{item_id}", sign_in(gw))
    assert "forward of the held request" in html and "pending (retrying)" in html

    stop(gw.proc)
    recorder.start()
    restarted = start(start_gateway, policy)
    (received,) = recorder.wait(1)
    assert received["method"] == "POST" and received["target"] == "/api/posts/7/comments"
    assert json.loads(received["body"]) == {"body": SPAM}
    header = recorder.header
    assert header(received, "content-type") == ["application/json"]
    assert header(received, "accept-language") == [ORIGINAL["Accept-Language"]]
    assert header(received, "x-client-version") == [ORIGINAL["X-Client-Version"]]
    assert header(received, "x-tsgate-user") == ["alice"] and header(received, "x-forwarded-for") == ["127.0.0.1"]
    assert header(received, "x-tsgate-decision") == [forward["decision_id"]]
    assert not [name for name, _ in received["headers"] if name in NEVER]
    delivered = wait_for(lambda: api(restarted, "GET", f"/review/webhooks?item_id={item_id}&state=delivered",
                                     ADMIN_TOKEN).json()["deliveries"])
    assert isinstance(delivered, list) and delivered[0]["event"] == "forward" and delivered[0]["attempts"] >= 2


def test_a_forward_the_backend_keeps_refusing_is_dead_lettered_and_a_retry_delivers_it(
        start_gateway: Callable[..., GatewayProc], tmp_path: Path, recorder: Recorder) -> None:
    """503 on every attempt: dead after 3 (visible with the API and on the console's deliveries
    page); the backend recovers and the moderator's retry delivers it once."""
    recorder.status = 503
    recorder.start()
    gw = start(start_gateway, forwarding_policy(recorder, tmp_path, "{attempts: 3, backoff: 100ms, timeout: 2s}"))
    create_account(gw, "mia", role="moderator")
    item_id = hold(gw, SPAM_2)
    approved = api(gw, "POST", f"/review/items/{item_id}/decision", ADMIN_TOKEN, {"decision": "approve"})
    assert approved.json()["effects"]["forward"]["status"] == 503
    dead = wait_for(lambda: api(gw, "GET", "/review/webhooks?state=dead&event=forward",
                                ADMIN_TOKEN).json()["deliveries"])
    assert isinstance(dead, list) and dead[0]["attempts"] == 3 and dead[0]["last_error"] == "HTTP 503"
    assert len(recorder.requests) == 3
    _, html = page(gw, "/console/webhooks", sign_in(gw))
    assert dead[0]["id"][:8] in html.split('id="dead-letters"', 1)[1].split("</table>", 1)[0]
    recorder.status = 201
    retried = api(gw, "POST", f"/review/webhooks/{dead[0]['id']}/retry", ADMIN_TOKEN)
    assert retried.status == 200 and retried.json()["state"] == "delivered"
    assert len(recorder.requests) == 4
