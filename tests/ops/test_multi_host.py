"""Scale-out correctness: several `tsgate run` processes on different ports ("hosts", some with
``--workers 2``) sharing one private Redis (state) and one private PostgreSQL database (accounts,
sessions, review queue). A limit is exact in total, not per host; a logout and a refresh-token
reuse seen by one host are honoured by the others; a held post written by one host is decided
through another host's admin API. (Two gateways on the shared test Redis with a SQLite file are
covered in tests/e2e: this is the PostgreSQL, three-host, concurrent variant.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from tests.conftest import ADMIN_TOKEN, Backend, GatewayProc, Response, policy_text, request
from tests.ops.conftest import PostgresServer, RedisServer, assert_problem

PASSWORD = "violet tangerine orbit forty-two"

LIMIT = """
routes:
  - id: limited
    match: {path: "/api/debug/echo/limited/**"}
    limits:
      - {name: global-route, rate: "12/minute", key: route}
  - id: any
    match: {path: "/**"}
"""

SHARED = """
database: "{db}"
auth:
  refresh_cookie: {{secure: false}}
  refresh_grace: 1s
routes:
  - id: comments
    match: {{methods: [POST], path: "/api/debug/echo/comments"}}
    moderation: {{content: [/body]}}
  - id: private
    match: {{path: "/api/debug/echo/private/**"}}
    auth: required
  - id: any
    match: {{path: "/**"}}
"""
SPAM = ("WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! "
        "To claim call 09061701461. Claim code KL341. Valid 12 hours only.")


def _keys() -> dict[str, str]:
    """One identity key set for every host (as operators distribute the key files)."""
    from authn.keys import AesKeyRing, SigningKeyRing

    return {"TSGATE_SIGNING_KEYS": SigningKeyRing.generate().to_json(),
            "TSGATE_REFRESH_KEYS": AesKeyRing.generate().to_json(),
            "TSGATE_CLEARANCE_KEYS": AesKeyRing.generate().to_json()}


def _json(port: int, path: str, body: dict[str, object], headers: dict[str, str] | None = None) -> Response:
    return request(port, "POST", path, body=json.dumps(body).encode(),
                   headers={"Content-Type": "application/json", **(headers or {})})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_limit_is_exact_across_three_hosts_under_concurrency(
        backend: Backend, private_redis: RedisServer, start_gateway: Callable[..., GatewayProc]) -> None:
    """Three hosts (two of them with two workers) share a 12/minute limit: 48 concurrent requests
    spread over them get exactly 12 answers 200 and 36 answers 429 problem+json."""
    text = policy_text(backend.port, LIMIT, state=private_redis.url)
    hosts = [start_gateway(text, workers=2), start_gateway(text, workers=2), start_gateway(text)]
    answers: list[Response] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        for i in range(8):
            answer = hosts[(index + i) % 3].get("/api/debug/echo/limited/x")
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = [a.status for a in answers]
    assert len(statuses) == 48
    assert statuses.count(200) == 12 and statuses.count(429) == 36, statuses
    for refused in (a for a in answers if a.status == 429):
        assert assert_problem(refused)["reason"] == "ratelimit.exceeded"


def test_logout_and_refresh_reuse_are_honoured_by_every_host(
        backend: Backend, private_redis: RedisServer, postgres_up: PostgresServer,
        start_gateway: Callable[..., GatewayProc]) -> None:
    """Accounts on PostgreSQL, revocations on Redis, one key set: an account registered on A
    signs in on B and is served by C; a logout on A is refused at once by B and C; a refresh
    token rotated on B and C and then replayed on A revokes the family on every host."""
    text = policy_text(backend.port, SHARED.format(db=postgres_up.create_database()), state=private_redis.url)
    env = _keys()
    a, b, c = (start_gateway(text, extra_env=env) for _ in range(3))
    created = _json(a.port, "/_tsgate/auth/register",
                    {"username": "alice", "email": "alice@example.org", "password": PASSWORD})
    assert created.status == 201, created.body

    def login(host: GatewayProc) -> dict[str, str]:
        answer = _json(host.port, "/_tsgate/auth/login", {"login": "alice", "password": PASSWORD})
        assert answer.status == 200, answer.body
        return dict(answer.json())

    session = login(b)
    assert c.get("/api/debug/echo/private/x", headers=_bearer(session["access_token"])).status == 200
    out = request(a.port, "POST", "/_tsgate/auth/logout", body=b"", headers=_bearer(session["access_token"]))
    assert out.status == 204
    for host in (b, c):
        refused = host.get("/api/debug/echo/private/x", headers=_bearer(session["access_token"]))
        assert refused.status == 401 and assert_problem(refused)["reason"] == "auth.invalid_token"
    assert _json(c.port, "/_tsgate/auth/refresh", {"refresh_token": session["refresh_token"]}).status == 401

    first = login(a)
    second = _json(b.port, "/_tsgate/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert second.status == 200, second.body
    third = _json(c.port, "/_tsgate/auth/refresh", {"refresh_token": second.json()["refresh_token"]})
    assert third.status == 200, third.body
    newest = third.json()
    assert b.get("/api/debug/echo/private/x", headers=_bearer(newest["access_token"])).status == 200
    # `first` is two generations old on another host: reuse, not a concurrent refresh.
    replay = _json(a.port, "/_tsgate/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert replay.status == 401 and assert_problem(replay)["reason"] == "auth.invalid_token"
    assert _json(b.port, "/_tsgate/auth/refresh", {"refresh_token": newest["refresh_token"]}).status == 401
    for host in (a, b, c):
        assert host.get("/api/debug/echo/private/x", headers=_bearer(newest["access_token"])).status == 401


def test_a_hold_written_by_one_host_is_decided_on_another(
        backend: Backend, private_redis: RedisServer, postgres_up: PostgresServer,
        start_gateway: Callable[..., GatewayProc]) -> None:
    """A holds a spam post (its row in PostgreSQL before the 202); B's admin API lists it and
    approves it (the held request is forwarded then); C's admin API sees it resolved."""
    text = policy_text(backend.port, SHARED.format(db=postgres_up.create_database()), state=private_redis.url)
    env = _keys()
    a, b, c = (start_gateway(text, extra_env=env) for _ in range(3))
    held = _json(a.port, "/api/debug/echo/comments", {"body": SPAM})
    assert held.status == 202 and assert_problem(held)["reason"] == "moderation.held"
    decision = held.json()["decision_id"]

    def admin(host: GatewayProc, method: str, path: str, body: dict[str, object] | None = None) -> Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return request(host.admin_port, method, path, body=json.dumps(body).encode() if body is not None else None,
                       headers=headers)

    listed = admin(b, "GET", "/review/items?kind=content")
    assert listed.status == 200, listed.body
    (item,) = [i for i in listed.json()["items"] if i["decision_id"] == decision]
    approved = admin(b, "POST", f"/review/items/{item['id']}/decision", {"decision": "approve"})
    assert approved.status == 200, approved.body
    assert approved.json()["effects"]["forward"]["status"] == 200
    seen = admin(c, "GET", f"/review/items/{item['id']}")
    assert seen.status == 200 and seen.json()["state"] == "resolved", seen.body
    again = admin(a, "POST", f"/review/items/{item['id']}/decision", {"decision": "remove"})
    assert again.status == 409 and assert_problem(again)["reason"] == "review.already_decided"
