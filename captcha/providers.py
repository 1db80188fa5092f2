"""Third-party CAPTCHA siteverify clients: Cloudflare Turnstile and hCaptcha (the optional rung
after proof of work, for audiences where PoW is not enough).

Both follow their documented server-side APIs:

- Turnstile: ``POST https://challenges.cloudflare.com/turnstile/v0/siteverify`` with ``secret``,
  ``response``, ``remoteip`` and ``idempotency_key``; answers ``success``, ``challenge_ts``,
  ``hostname``, ``error-codes``, ``action``, ``cdata``. A token is valid once for 300 s; the
  idempotency key makes a retry after a network error or ``internal-error`` safe (a retried
  verification of the same token succeeds again instead of reading as a duplicate).
- hCaptcha: ``POST https://api.hcaptcha.com/siteverify`` (form-encoded) with ``secret``,
  ``response``, ``remoteip`` and ``sitekey``; answers ``success``, ``challenge_ts``, ``hostname``,
  ``credit``, ``error-codes`` (and ``score`` on Enterprise).

The verify URL is configurable (a local stand-in in tests, a proxy in locked-down networks).
Failures are values: a ``ProviderResult`` with the provider's error codes, or ``network-error``
/ ``bad-response`` when the provider could not be asked; a verification never raises."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from captcha.settings import ProviderSettings

__all__ = [
    "HCAPTCHA_ERRORS",
    "HCAPTCHA_VERIFY_URL",
    "TURNSTILE_ERRORS",
    "TURNSTILE_VERIFY_URL",
    "HCaptcha",
    "Provider",
    "ProviderResult",
    "Turnstile",
    "build_provider",
]

log = logging.getLogger("tsgate.captcha.providers")

TURNSTILE_VERIFY_URL = "https://challenges.cloudflare.com/turnstile/v0/siteverify"
HCAPTCHA_VERIFY_URL = "https://api.hcaptcha.com/siteverify"
TURNSTILE_ERRORS = frozenset({"missing-input-secret", "invalid-input-secret", "missing-input-response",
                              "invalid-input-response", "bad-request", "timeout-or-duplicate", "internal-error"})
HCAPTCHA_ERRORS = frozenset({"missing-input-secret", "invalid-input-secret", "missing-input-response",
                             "invalid-input-response", "expired-input-response", "already-seen-response",
                             "bad-request", "missing-remoteip", "invalid-remoteip", "not-using-dummy-passcode",
                             "sitekey-secret-mismatch", "invalid-or-already-seen-response"})
MAX_TOKEN_CHARS = 4096  # Turnstile documents 2048; hCaptcha tokens are longer but well under this
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ProviderResult:
    success: bool
    error_codes: tuple[str, ...] = ()
    hostname: str | None = None
    challenge_ts: str | None = None


class Provider(Protocol):
    kind: str
    settings: ProviderSettings

    async def verify(self, token: str, remote_ip: str | None) -> ProviderResult: ...


def _post_form(url: str, fields: dict[str, str], timeout: float) -> tuple[int, bytes]:
    data = urllib.parse.urlencode(fields).encode("ascii")
    request = urllib.request.Request(url, data=data, method="POST",  # noqa: S310 - operator-configured URL
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), response.read(MAX_RESPONSE_BYTES)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(MAX_RESPONSE_BYTES)


def _parse(status: int, body: bytes) -> ProviderResult:
    try:
        doc: Any = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("success"), bool):
        return ProviderResult(False, (f"bad-response-{status}",))
    codes = doc.get("error-codes") or []
    errors = tuple(str(c)[:64] for c in codes[:8]) if isinstance(codes, list) else ("bad-response",)
    hostname = doc.get("hostname") if isinstance(doc.get("hostname"), str) else None
    stamp = doc.get("challenge_ts") if isinstance(doc.get("challenge_ts"), str) else None
    return ProviderResult(doc["success"] and status == 200, errors, hostname, stamp)


class _SiteVerify:
    kind = ""
    retry_on: frozenset[str] = frozenset()

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings

    def _fields(self, token: str, remote_ip: str | None) -> dict[str, str]:
        fields = {"secret": self.settings.secret, "response": token}
        if remote_ip:
            fields["remoteip"] = remote_ip
        return fields

    async def _once(self, fields: dict[str, str]) -> ProviderResult:
        try:
            status, body = await asyncio.to_thread(_post_form, self.settings.verify_url, fields,
                                                   self.settings.timeout)
        except (OSError, urllib.error.URLError) as exc:  # TimeoutError is an OSError
            log.warning("%s siteverify unreachable: %s", self.kind, exc)
            return ProviderResult(False, ("network-error",))
        return _parse(status, body)

    async def verify(self, token: str, remote_ip: str | None) -> ProviderResult:
        if not token or len(token) > MAX_TOKEN_CHARS:
            # Documented answers for these; do not spend a round trip on them.
            return ProviderResult(False, ("missing-input-response" if not token else "invalid-input-response",))
        fields = self._fields(token, remote_ip)
        result = await self._once(fields)
        if not result.success and self.retry_on.intersection(result.error_codes):
            result = await self._once(fields)  # safe only because the fields carry an idempotency key
        expected = self.settings.hostname
        if result.success and expected is not None and result.hostname != expected:
            return ProviderResult(False, ("hostname-mismatch",), result.hostname, result.challenge_ts)
        return result


class Turnstile(_SiteVerify):
    kind = "turnstile"
    retry_on = frozenset({"internal-error", "network-error"})

    def _fields(self, token: str, remote_ip: str | None) -> dict[str, str]:
        fields = super()._fields(token, remote_ip)
        fields["idempotency_key"] = str(uuid.uuid4())
        return fields


class HCaptcha(_SiteVerify):
    kind = "hcaptcha"

    def _fields(self, token: str, remote_ip: str | None) -> dict[str, str]:
        fields = super()._fields(token, remote_ip)
        fields["sitekey"] = self.settings.site_key  # lets hCaptcha refuse a token from another site
        return fields


def build_provider(settings: ProviderSettings) -> Provider:
    return Turnstile(settings) if settings.kind == "turnstile" else HCaptcha(settings)
