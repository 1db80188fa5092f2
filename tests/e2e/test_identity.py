"""Identity end to end: a `tsgate run` process (tsgate as identity provider, and as verifier of a
backend's own tokens) in front of the demo backend process. SECURITY.md classes 4 and 5."""

from __future__ import annotations

import base64
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.conftest import ROOT, Backend, GatewayProc, Response, policy_text, redis_url, request

PASSWORD = "violet tangerine orbit forty-two"
BACKEND_SECRET = "backend-shared-secret-0123456789abcdef"

AUTH_ROUTES = """
database: "sqlite+aiosqlite:///{db}"
auth:
  refresh_cookie: {{secure: false}}
  refresh_grace: 5s
  login: {{challenge_after: 3, lock_after: 6, lock_for: 60s, stuffing_distinct_logins: 8}}
  external:
    - name: backend
      scheme: Token
      algorithms: [HS256]
      secret_env: TEST_BACKEND_SECRET
      issuer: backend
routes:
  - id: admin
    match: {{path: "/api/debug/echo/admin/**"}}
    auth: required
    roles: [admin]
  - id: private
    match: {{path: "/api/debug/echo/private/**"}}
    auth: required
  - id: any
    match: {{path: "/**"}}
"""


def post_json(port: int, path: str, body: dict[str, object], headers: dict[str, str] | None = None) -> Response:
    return request(port, "POST", path, body=json.dumps(body).encode(),
                   headers={"Content-Type": "application/json", **(headers or {})})


@pytest.fixture
def auth_gw(backend: Backend, start_gateway: Callable[..., GatewayProc], tmp_path: Path) -> GatewayProc:
    db = tmp_path / "accounts.db"
    return start_gateway(policy_text(backend.port, AUTH_ROUTES.format(db=db)),
                         extra_env={"TEST_BACKEND_SECRET": BACKEND_SECRET})


def register(gw: GatewayProc, username: str = "alice", password: str = PASSWORD) -> Response:
    return post_json(gw.port, "/_tsgate/auth/register",
                     {"username": username, "email": f"{username}@example.org", "password": password})


def login(gw: GatewayProc, login_name: str = "alice", password: str = PASSWORD, **kw: object) -> Response:
    return post_json(gw.port, "/_tsgate/auth/login", {"login": login_name, "password": password}, **kw)  # type: ignore[arg-type]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def echo_headers(resp: Response) -> dict[str, str]:
    assert resp.status == 200, resp.body
    return {n: v for n, v in resp.json()["headers"]}


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # joserfc 1.8 on RFC 9864's EdDSA rename
def test_register_login_and_identity_reaches_backend(auth_gw: GatewayProc) -> None:
    """A registered user's request reaches the backend with X-Tsgate-User/-Roles and a signed
    assertion (aud upstream, bound to the decision id) that verifies with the public JWKS."""
    created = register(auth_gw)
    assert created.status == 201 and created.json()["username"] == "alice"
    tokens = login(auth_gw)
    assert tokens.status == 200
    body = tokens.json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 600
    assert "HttpOnly" in tokens.headers["set-cookie"] and "SameSite=Strict" in tokens.headers["set-cookie"]
    headers = echo_headers(auth_gw.get("/api/debug/echo/private/x", headers={
        **bearer(body["access_token"]), "X-Tsgate-User": "mallory", "X-Tsgate-Roles": "admin"}))
    assert headers["x-tsgate-user"] == "alice"
    assert headers["x-tsgate-roles"] == "user"
    jwks = auth_gw.get("/.well-known/jwks.json")
    assert jwks.status == 200 and "max-age" in jwks.headers["cache-control"]
    keyset = KeySet.import_key_set(jwks.json())
    assertion = jose_jwt.decode(headers["x-tsgate-assertion"], keyset, algorithms=["EdDSA"])
    assert assertion.claims["aud"] == "upstream" and assertion.claims["did"] == headers["x-tsgate-decision"]
    access = jose_jwt.decode(body["access_token"], keyset, algorithms=["EdDSA"])  # third-party verification
    assert access.claims["name"] == "alice" and access.header["alg"] == "EdDSA"
    me = auth_gw.get("/_tsgate/auth/me", headers=bearer(body["access_token"]))
    assert me.status == 200 and me.json()["username"] == "alice"


def test_required_route_without_token_is_401(auth_gw: GatewayProc) -> None:
    """auth: required answers 401 problem+json with a Bearer challenge, and forwards nothing."""
    resp = auth_gw.get("/api/debug/echo/private/x")
    assert resp.status == 401 and resp.json()["reason"] == "auth.required"
    assert resp.headers["www-authenticate"].startswith("Bearer")


def forge(header: dict[str, object], claims: dict[str, object], signature: bytes = b"") -> str:
    def enc(part: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()

    return f"{enc(header)}.{enc(claims)}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def hs256(header: dict[str, object], claims: dict[str, object], secret: bytes) -> str:
    """An HS256 token signed with ``secret`` (pyjwt itself refuses to sign with key-looking secrets)."""
    import hashlib
    import hmac

    unsigned = forge(header, claims).rsplit(".", 1)[0]
    mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return unsigned + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_every_token_failure_is_the_same_401(auth_gw: GatewayProc) -> None:
    """Garbage, alg:none, a tampered payload and HS256-with-the-public-key all get the identical
    401 invalid_token answer (reason, header), even on an optional route."""
    register(auth_gw)
    good = login(auth_gw).json()["access_token"]
    kid = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))["kid"]
    now = int(time.time())
    claims = {"iss": "tsgate", "aud": "tsgate", "sub": "x", "exp": now + 600, "iat": now, "nbf": now,
              "jti": "j", "roles": ["admin"], "sid": "s", "name": "admin"}
    public = auth_gw.get("/.well-known/jwks.json").json()["keys"][0]
    tampered_payload = base64.urlsafe_b64encode(json.dumps({**claims, "name": "root"}).encode()).rstrip(b"=")
    tampered = good.split(".")[0] + "." + tampered_payload.decode() + "." + good.split(".")[2]
    bad_tokens = [
        "garbage",
        forge({"alg": "none", "kid": kid}, claims),
        tampered,
        hs256({"alg": "HS256", "kid": kid}, claims, json.dumps(public).encode()),  # JWK as HMAC secret
        hs256({"alg": "HS256", "kid": kid}, claims, public["x"].encode()),  # public key as HMAC secret
        forge({"alg": "EdDSA", "kid": "../../etc/passwd"}, claims, b"x" * 64),
        forge({"alg": "EdDSA", "kid": kid, "jku": "http://evil.example/jwks"}, claims, b"x" * 64),
    ]
    answers = []
    for token in bad_tokens:
        for path in ("/api/debug/echo/private/x", "/api/debug/echo/public"):
            resp = auth_gw.get(path, headers=bearer(token))
            answers.append((resp.status, resp.json()["reason"], resp.headers.get("www-authenticate")))
    assert set(answers) == {(401, "auth.invalid_token", 'Bearer realm="tsgate", error="invalid_token"')}


def test_roles_are_enforced(auth_gw: GatewayProc) -> None:
    """A route that needs the admin role refuses a plain user with 403."""
    register(auth_gw)
    token = login(auth_gw).json()["access_token"]
    resp = auth_gw.get("/api/debug/echo/admin/x", headers=bearer(token))
    assert resp.status == 403 and resp.json()["reason"] == "auth.forbidden"


def test_admin_created_with_cli_passes_role_check(auth_gw: GatewayProc) -> None:
    """`tsgate accounts create --role admin` makes a first admin who can use admin routes."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "accounts", "create", "--policy", str(auth_gw.policy_path),
         "--username", "root", "--email", "root@example.org", "--role", "admin", "--password-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    token = login(auth_gw, "root").json()["access_token"]
    headers = echo_headers(auth_gw.get("/api/debug/echo/admin/x", headers=bearer(token)))
    assert headers["x-tsgate-roles"] == "admin"


def test_refresh_rotates_and_reuse_revokes_the_family(auth_gw: GatewayProc) -> None:
    """Each refresh token works once; replaying an old one (after the grace window) revokes the
    whole family: its newest refresh token and access token stop working too."""
    register(auth_gw)
    first = login(auth_gw).json()
    second = post_json(auth_gw.port, "/_tsgate/auth/refresh", {"refresh_token": first["refresh_token"]}).json()
    third = post_json(auth_gw.port, "/_tsgate/auth/refresh", {"refresh_token": second["refresh_token"]}).json()
    assert len({first["refresh_token"], second["refresh_token"], third["refresh_token"]}) == 3
    # `first` is two generations old: this is reuse, not a concurrent refresh.
    replay = post_json(auth_gw.port, "/_tsgate/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert replay.status == 401 and replay.json()["reason"] == "auth.invalid_token"
    assert post_json(auth_gw.port, "/_tsgate/auth/refresh", {"refresh_token": third["refresh_token"]}).status == 401
    assert auth_gw.get("/api/debug/echo/private/x", headers=bearer(third["access_token"])).status == 401


def test_parallel_refresh_gets_one_successor(auth_gw: GatewayProc) -> None:
    """Eight concurrent refreshes of one token (a single-page app's tabs) all succeed with the
    same new pair, and the family stays valid."""
    register(auth_gw)
    token = login(auth_gw).json()["refresh_token"]
    results: list[Response] = []

    def refresh() -> None:
        results.append(post_json(auth_gw.port, "/_tsgate/auth/refresh", {"refresh_token": token}))

    threads = [threading.Thread(target=refresh) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == [200] * 8
    assert len({r.json()["refresh_token"] for r in results}) == 1
    successor = results[0].json()
    assert auth_gw.get("/api/debug/echo/private/x", headers=bearer(successor["access_token"])).status == 200


def test_refresh_from_cookie(auth_gw: GatewayProc) -> None:
    """The refresh token also works from its HttpOnly cookie (JSON body required: CSRF)."""
    register(auth_gw)
    cookie = login(auth_gw).headers["set-cookie"].split(";")[0]
    form = request(auth_gw.port, "POST", "/_tsgate/auth/refresh", body=b"", headers={
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 415
    resp = post_json(auth_gw.port, "/_tsgate/auth/refresh", {}, headers={"Cookie": cookie})
    assert resp.status == 200 and resp.json()["access_token"]


def test_logout_revokes_access_and_refresh(auth_gw: GatewayProc) -> None:
    """After logout the access token is refused at once and the refresh token is dead; with
    ?all=true every session of the account ends."""
    register(auth_gw)
    one, two = login(auth_gw).json(), login(auth_gw).json()
    out = request(auth_gw.port, "POST", "/_tsgate/auth/logout", body=b"", headers=bearer(one["access_token"]))
    assert out.status == 204
    assert auth_gw.get("/api/debug/echo/private/x", headers=bearer(one["access_token"])).status == 401
    assert post_json(auth_gw.port, "/_tsgate/auth/refresh", {"refresh_token": one["refresh_token"]}).status == 401
    assert auth_gw.get("/api/debug/echo/private/x", headers=bearer(two["access_token"])).status == 200
    three = login(auth_gw).json()
    request(auth_gw.port, "POST", "/_tsgate/auth/logout?all=true", body=b"", headers=bearer(three["access_token"]))
    assert auth_gw.get("/api/debug/echo/private/x", headers=bearer(two["access_token"])).status == 401
    assert post_json(auth_gw.port, "/_tsgate/auth/refresh", {"refresh_token": two["refresh_token"]}).status == 401


def test_no_user_enumeration(auth_gw: GatewayProc) -> None:
    """Unknown user and wrong password get the same status, reason and detail, after similar work."""
    register(auth_gw)
    unknown, wrong = [], []
    for _ in range(2):  # below challenge_after for each login name
        t = time.perf_counter()
        a = login(auth_gw, "nobody-here", PASSWORD)
        unknown.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = login(auth_gw, "alice", "wrong password but long enough")
        wrong.append(time.perf_counter() - t)
        assert (a.status, a.json()["reason"], a.json()["detail"]) == (b.status, b.json()["reason"], b.json()["detail"])
        assert a.status == 401 and a.json()["reason"] == "auth.invalid_credentials"
    # Both paths run argon2 once; a missing dummy hash would make "unknown" ~10x faster.
    assert statistics.median(unknown) > statistics.median(wrong) / 4


def test_failed_logins_challenge_then_lock(auth_gw: GatewayProc) -> None:
    """After 3 failures the login is challenged, after 6 locked with Retry-After; an unknown name
    is treated the same (locks reveal nothing), and the right password does not bypass a lock."""
    register(auth_gw)
    for name in ("alice", "ghost-user"):
        statuses = [login(auth_gw, name, "wrong password but long enough").status for _ in range(7)]
        assert statuses[:3] == [401, 401, 401]
        assert 403 in statuses
    challenged = login(auth_gw, "alice", PASSWORD)
    assert challenged.status in (403, 429)
    assert challenged.headers.get("tsgate-mitigated") == "challenge" or "retry-after" in challenged.headers


def test_credential_stuffing_is_challenged(auth_gw: GatewayProc) -> None:
    """One IP trying many different login names is challenged even for names with no failures."""
    statuses = [login(auth_gw, f"user{i}", "some password that is long").status for i in range(10)]
    assert statuses[-1] == 403
    assert login(auth_gw, "fresh-name", "some password that is long").headers.get("tsgate-mitigated") == "challenge"


def test_weak_passwords_refused(auth_gw: GatewayProc) -> None:
    """Registration refuses short, common and context-containing passwords (NIST SP 800-63B-4)."""
    assert register(auth_gw, "bob", "short").json()["reason"] == "password.too_short"
    assert register(auth_gw, "bob", "passwordpassword").status == 422
    assert register(auth_gw, "bobbyjones", "bobbyjones-is-my-password").status == 422
    assert register(auth_gw, "bob", PASSWORD).status == 201
    assert register(auth_gw, "BOB", PASSWORD).status == 409


JSON = {"Content-Type": "application/json"}


def test_bad_auth_requests_are_clear_4xx(auth_gw: GatewayProc) -> None:
    """Malformed bodies on auth endpoints get 4xx problems, never 500."""
    cases = [
        request(auth_gw.port, "POST", "/_tsgate/auth/login", body=b"{not json", headers=JSON),
        request(auth_gw.port, "POST", "/_tsgate/auth/login", body=b"[1,2]", headers=JSON),
        post_json(auth_gw.port, "/_tsgate/auth/login", {"login": 5, "password": None}),
        request(auth_gw.port, "GET", "/_tsgate/auth/login"),
        request(auth_gw.port, "POST", "/_tsgate/auth/login", body=b"x" * 20000,
                headers={"Content-Type": "application/json"}),
        request(auth_gw.port, "POST", "/_tsgate/auth/login", body=b"[" * 5000 + b"]" * 5000,
                headers={"Content-Type": "application/json"}),
    ]
    assert [c.status for c in cases] == [400, 400, 422, 405, 413, 400]
    assert all(c.headers["content-type"] == "application/problem+json" for c in cases)


def test_external_authenticator_passes_backend_token_through(auth_gw: GatewayProc) -> None:
    """A backend's own HS256 token (`Authorization: Token <jwt>`) is verified and forwarded
    unchanged; a token signed with another secret, or alg none, is a 401."""
    now = int(time.time())
    claims = {"sub": "b-42", "iss": "backend", "exp": now + 300, "iat": now}
    token = jwt.encode(claims, BACKEND_SECRET, algorithm="HS256")
    headers = echo_headers(auth_gw.get("/api/debug/echo/private/x", headers={"Authorization": f"Token {token}"}))
    assert headers["authorization"] == f"Token {token}"
    assert headers["x-tsgate-user"] == "b-42"
    wrong = jwt.encode(claims, "another-secret-another-secret-0123", algorithm="HS256")
    assert auth_gw.get("/api/debug/echo/private/x", headers={"Authorization": f"Token {wrong}"}).status == 401
    none = forge({"alg": "none"}, claims)
    assert auth_gw.get("/api/debug/echo/private/x", headers={"Authorization": f"Token {none}"}).status == 401


@pytest.mark.skipif(redis_url() is None, reason="no Redis available (see scripts/with-services.sh)")
def test_revocation_seen_by_a_second_gateway(backend: Backend, start_gateway: Callable[..., GatewayProc],
                                             tmp_path: Path) -> None:
    """Two gateway processes share Redis, the database and the keys: a logout at one is refused
    at the other immediately."""
    from authn.keys import AesKeyRing, SigningKeyRing

    env = {"TEST_BACKEND_SECRET": BACKEND_SECRET, "TSGATE_SIGNING_KEYS": SigningKeyRing.generate().to_json(),
           "TSGATE_REFRESH_KEYS": AesKeyRing.generate().to_json()}
    import uuid

    state = f"{redis_url()}?prefix=tsgate-test-{uuid.uuid4().hex[:8]}:"
    text = policy_text(backend.port, AUTH_ROUTES.format(db=tmp_path / "shared.db"), state=state)
    one = start_gateway(text, extra_env=env)
    two = start_gateway(text, extra_env=env)
    register(one)
    pair = login(one).json()
    assert two.get("/api/debug/echo/private/x", headers=bearer(pair["access_token"])).status == 200
    logout = request(one.port, "POST", "/_tsgate/auth/logout", body=b"", headers=bearer(pair["access_token"]))
    assert logout.status == 204
    assert two.get("/api/debug/echo/private/x", headers=bearer(pair["access_token"])).status == 401


def test_external_subject_cannot_inject_headers(auth_gw: GatewayProc) -> None:
    """A validly signed backend token whose subject carries CR/LF is refused, not forwarded as a header."""
    now = int(time.time())
    token = jwt.encode({"sub": "x\r\nX-Tsgate-Roles: admin", "iss": "backend", "exp": now + 300, "iat": now},
                       BACKEND_SECRET, algorithm="HS256")
    resp = auth_gw.get("/api/debug/echo/private/x", headers={"Authorization": f"Token {token}"})
    assert resp.status == 401


def set_status(gw: GatewayProc, status: str) -> Response:
    return gw.admin("POST", "/accounts/alice/status", body=json.dumps({"status": status}).encode(),
                    content_type="application/json")


def test_suspension_ends_sessions_at_once(auth_gw: GatewayProc) -> None:
    """An admin suspending an account revokes its sessions immediately; its login then gets the
    same answer as a wrong password; reactivation lets it sign in again."""
    register(auth_gw)
    pair = login(auth_gw).json()
    changed = set_status(auth_gw, "suspended")
    assert changed.status == 200 and changed.json()["sessions_revoked"] == 1
    assert auth_gw.get("/api/debug/echo/private/x", headers=bearer(pair["access_token"])).status == 401
    refused = login(auth_gw)
    assert refused.status == 401 and refused.json()["reason"] == "auth.invalid_credentials"
    assert set_status(auth_gw, "bogus").status == 400
    assert set_status(auth_gw, "active").status == 200
    assert login(auth_gw).status == 200


def test_key_rotation_without_downtime(backend: Backend, start_gateway: Callable[..., GatewayProc],
                                       tmp_path: Path) -> None:
    """`tsgate keys rotate` + reload: old tokens still verify, new tokens use the new key, and the
    JWKS lists both."""
    keys = tmp_path / "signing.json"
    subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "generate", "--out", str(keys)], check=True,
                   cwd=ROOT, capture_output=True)
    gw = start_gateway(policy_text(backend.port, AUTH_ROUTES.format(db=tmp_path / "k.db")),
                       extra_env={"TEST_BACKEND_SECRET": BACKEND_SECRET, "TSGATE_SIGNING_KEYS_FILE": str(keys)})
    register(gw)
    old = login(gw).json()["access_token"]
    subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "rotate", "--file", str(keys)], check=True,
                   cwd=ROOT, capture_output=True)
    assert gw.admin("POST", "/policy/reload").status == 200
    new = login(gw).json()["access_token"]
    kid = lambda t: json.loads(base64.urlsafe_b64decode(t.split(".")[0] + "=="))["kid"]  # noqa: E731
    assert kid(old) != kid(new)
    assert {k["kid"] for k in gw.get("/.well-known/jwks.json").json()["keys"]} == {kid(old), kid(new)}
    for token in (old, new):
        assert gw.get("/api/debug/echo/private/x", headers=bearer(token)).status == 200


LOGIN_LIMIT = """
  - id: login-limit
    match: {methods: [POST], path: "/_tsgate/auth/login"}
    limits:
      - {name: login-failures-per-name, rate: "2/minute", key: "body:/login", count_on: [401]}
"""


def test_login_limit_counts_only_failures(backend: Backend, start_gateway: Callable[..., GatewayProc],
                                          tmp_path: Path) -> None:
    """A limit on the login endpoint keyed by the (normalized) login name counts only failed logins:
    successes never use it up, two failures do, and the name is then refused with 429."""
    routes = AUTH_ROUTES.format(db=tmp_path / "l.db").replace("routes:\n", "routes:" + LOGIN_LIMIT, 1)
    gw = start_gateway(policy_text(backend.port, routes), extra_env={"TEST_BACKEND_SECRET": BACKEND_SECRET})
    register(gw)
    assert [login(gw).status for _ in range(4)] == [200] * 4
    assert [login(gw, "ALICE", "wrong password but long enough").status for _ in range(2)] == [401, 401]
    refused = login(gw, " alice ", PASSWORD)
    assert refused.status == 429 and refused.json()["reason"] == "ratelimit.exceeded"
    assert login(gw, "someone-else", "wrong password but long enough").status == 401
