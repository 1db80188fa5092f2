"""Turnstile and hCaptcha siteverify clients against a local stand-in that implements the
documented APIs (fields, single-use tokens, error codes, Turnstile's idempotency key)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from captcha.providers import HCAPTCHA_ERRORS, TURNSTILE_ERRORS, HCaptcha, Turnstile
from captcha.runtime import CaptchaRuntime
from captcha.settings import ProviderSettings
from tests.conftest import free_port

SECRET = "0x4AAAAAAA-test-secret"
SITE_KEY = "0x4AAAAAAA-site"


@dataclass
class StandIn:
    """The siteverify side of both providers, as documented."""

    url: str
    seen: set[str] = field(default_factory=set)
    idempotent: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    fail_next_internal: int = 0


def _answer(stand_in: StandIn, kind: str, fields: dict[str, str]) -> dict[str, Any]:
    stand_in.requests.append(fields)
    secret, token = fields.get("secret"), fields.get("response")
    if not secret:
        return {"success": False, "error-codes": ["missing-input-secret"]}
    if secret != SECRET:
        return {"success": False, "error-codes": ["invalid-input-secret"]}
    if not token:
        return {"success": False, "error-codes": ["missing-input-response"]}
    if kind == "turnstile":
        key = fields.get("idempotency_key")
        if key and key in stand_in.idempotent:  # a retry with the same key gets the same answer
            return stand_in.idempotent[key]
        if stand_in.fail_next_internal:
            stand_in.fail_next_internal -= 1
            return {"success": False, "error-codes": ["internal-error"]}
    elif fields.get("sitekey") not in (None, SITE_KEY):
        return {"success": False, "error-codes": ["sitekey-secret-mismatch"]}
    if not token.startswith("good-"):
        return {"success": False, "error-codes": ["invalid-input-response"]}
    if token in stand_in.seen:
        code = "timeout-or-duplicate" if kind == "turnstile" else "already-seen-response"
        return {"success": False, "error-codes": [code]}
    stand_in.seen.add(token)
    answer = {"success": True, "challenge_ts": "2025-01-01T00:00:00Z", "hostname": "example.org", "error-codes": []}
    if kind == "turnstile" and fields.get("idempotency_key"):
        stand_in.idempotent[fields["idempotency_key"]] = answer
    return answer


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    port = free_port()
    state = StandIn(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            if self.headers.get("Content-Type", "").startswith("application/json"):
                fields = {k: str(v) for k, v in json.loads(raw).items()}
            else:
                fields = {k: v[0] for k, v in parse_qs(raw).items()}
            kind = "turnstile" if self.path.startswith("/turnstile") else "hcaptcha"
            body = json.dumps(_answer(state, kind, fields)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def settings_for(kind: str, stand_in: StandIn, **kw: Any) -> ProviderSettings:
    path = "/turnstile/v0/siteverify" if kind == "turnstile" else "/siteverify"
    base: dict[str, Any] = dict(kind=kind, site_key=SITE_KEY, secret=SECRET, verify_url=stand_in.url + path,
                                timeout=2.0, level=3)
    base.update(kw)
    return ProviderSettings(**base)


async def test_turnstile_success_once_then_duplicate(stand_in: StandIn) -> None:
    """A good token passes once (with remoteip and an idempotency key sent); reuse is timeout-or-duplicate."""
    client = Turnstile(settings_for("turnstile", stand_in))
    first = await client.verify("good-t1", "203.0.113.5")
    assert first.success and first.hostname == "example.org"
    sent = stand_in.requests[-1]
    assert sent["secret"] == SECRET and sent["response"] == "good-t1" and sent["remoteip"] == "203.0.113.5"
    assert len(sent["idempotency_key"]) == 36
    again = await client.verify("good-t1", "203.0.113.5")
    assert not again.success and again.error_codes == ("timeout-or-duplicate",)
    assert set(again.error_codes) <= TURNSTILE_ERRORS


async def test_turnstile_retries_internal_error_with_the_same_idempotency_key(stand_in: StandIn) -> None:
    """internal-error is retried once, with the same idempotency key, and then succeeds."""
    stand_in.fail_next_internal = 1
    result = await Turnstile(settings_for("turnstile", stand_in)).verify("good-t2", None)
    assert result.success
    keys = [r["idempotency_key"] for r in stand_in.requests[-2:]]
    assert keys[0] == keys[1]


async def test_turnstile_errors_are_values(stand_in: StandIn) -> None:
    """Bad secret, bad token, empty or oversized token: documented error codes, never exceptions."""
    assert (await Turnstile(settings_for("turnstile", stand_in, secret="wrong")).verify("good-x", None)
            ).error_codes == ("invalid-input-secret",)
    client = Turnstile(settings_for("turnstile", stand_in))
    assert (await client.verify("forged", None)).error_codes == ("invalid-input-response",)
    assert (await client.verify("", None)).error_codes == ("missing-input-response",)
    assert (await client.verify("good-" + "x" * 5000, None)).error_codes == ("invalid-input-response",)


async def test_hcaptcha_fields_and_codes(stand_in: StandIn) -> None:
    """hCaptcha gets secret, response, remoteip and sitekey; reuse is already-seen-response."""
    client = HCaptcha(settings_for("hcaptcha", stand_in))
    assert (await client.verify("good-h1", "198.51.100.2")).success
    assert stand_in.requests[-1]["sitekey"] == SITE_KEY and "idempotency_key" not in stand_in.requests[-1]
    again = await client.verify("good-h1", "198.51.100.2")
    assert again.error_codes == ("already-seen-response",) and set(again.error_codes) <= HCAPTCHA_ERRORS
    other_site = HCaptcha(settings_for("hcaptcha", stand_in, site_key="another"))
    assert (await other_site.verify("good-h2", None)).error_codes == ("sitekey-secret-mismatch",)


async def test_hostname_must_match_when_configured(stand_in: StandIn) -> None:
    """A token solved on another site (hostname mismatch) is refused even though the provider said yes."""
    result = await HCaptcha(settings_for("hcaptcha", stand_in, hostname="mine.example")).verify("good-h3", None)
    assert not result.success and result.error_codes == ("hostname-mismatch",)


async def test_unreachable_provider_is_a_network_error() -> None:
    """A provider that does not answer is network-error (Turnstile retries once), not an exception."""
    dead = ProviderSettings("turnstile", SITE_KEY, SECRET, f"http://127.0.0.1:{free_port()}/x", timeout=0.5)
    assert (await Turnstile(dead).verify("good-x", None)).error_codes == ("network-error",)


async def test_runtime_keeps_provider_tokens_single_use(stand_in: StandIn, runtime: CaptchaRuntime) -> None:
    """Through the runtime a token is single use even before the provider is asked again."""
    runtime.providers = {"turnstile": Turnstile(settings_for("turnstile", stand_in))}
    token = f"good-{uuid.uuid4().hex}"
    assert (await runtime.check_provider("turnstile", token, "203.0.113.9")).success
    asked = len(stand_in.requests)
    second = await runtime.check_provider("turnstile", token, "203.0.113.9")
    assert not second.success and len(stand_in.requests) == asked
