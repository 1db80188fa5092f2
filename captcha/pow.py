"""ALTCHA proof-of-work v2 challenges, created and verified with the ``altcha`` package.

``create`` makes a PBKDF2 (default) challenge in deterministic mode: the server derives the key
for a random counter once and publishes its first half as ``keyPrefix``, so the client must find
that counter (difficulty = cost x counter, the level), and signs the derived key (``keySignature``)
so that verification is two HMACs instead of a key derivation. ``expiresAt`` is always set, and
what the challenge is for travels in the signed ``data``: scope, level, issue time, key id and the
principal binding of the client that fetched it.

``check`` never raises for hostile input: every outcome is a ``PowVerdict``. The whole parameter
object is covered by the HMAC (canonical JSON), so changing the salt, nonce, cost, expiry or data
— the splicing class of CVE-2025-68113 — fails the signature. Accepting a solution *once* is the
caller's job (``PowVerdict.nonce`` is the replay id), because it needs the shared store."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal

import altcha

from captcha.keys import CaptchaKeys
from captcha.settings import Level
from gateway.core.clock import Clock

__all__ = ["MAX_PAYLOAD_CHARS", "PowIssuer", "PowVerdict"]

MAX_PAYLOAD_CHARS = 8192
Outcome = Literal["ok", "expired", "invalid", "malformed"]


@dataclass(frozen=True, slots=True)
class PowVerdict:
    outcome: Outcome
    scope: str = ""
    level: int = 0
    binding: str = ""
    nonce: str = ""
    issued_at: int = 0
    expires_at: int = 0


_MALFORMED = PowVerdict("malformed")
_INVALID = PowVerdict("invalid")


def _decode(raw: object) -> dict[str, Any] | None:
    """The widget's payload: base64 of JSON (form field ``altcha``), or the JSON object itself."""
    if isinstance(raw, str):
        if not raw or len(raw) > MAX_PAYLOAD_CHARS:
            return None
        try:
            raw = json.loads(base64.b64decode(raw, validate=True))
        except (ValueError, binascii.Error, RecursionError, UnicodeDecodeError):
            return None
    if not isinstance(raw, dict):
        return None
    challenge, solution = raw.get("challenge"), raw.get("solution")
    if not isinstance(challenge, dict) or not isinstance(solution, dict):
        return None
    if not isinstance(challenge.get("parameters"), dict) or not isinstance(challenge.get("signature"), str):
        return None
    if not isinstance(solution.get("derivedKey"), str) or type(solution.get("counter")) is not int:
        return None
    return raw


class PowIssuer:
    def __init__(self, keys: CaptchaKeys, clock: Clock, *, algorithm: str = "PBKDF2/SHA-256",
                 levels: tuple[Level, ...], ttl: float) -> None:
        self.keys = keys
        self.clock = clock
        self.algorithm = algorithm
        self.levels = levels
        self.ttl = ttl

    def create(self, scope: str, level: int, binding: str) -> dict[str, Any]:
        """A signed challenge as the ALTCHA widget 3.x reads it from its challenge URL
        (``{"parameters": {...}, "signature": "..."}``). CPU work: one key derivation at the
        level's cost, so callers run it off the event loop and rate-limit it."""
        spec = self.levels[level - 1]
        key = self.keys.current
        now = int(self.clock.now())
        counter = secrets.randbelow(spec.counter - spec.counter // 2 + 1) + spec.counter // 2
        challenge = altcha.create_challenge(
            self.algorithm, spec.cost, counter=counter, expires_at=now + int(self.ttl),
            data={"k": key.kid, "s": scope, "l": level, "b": binding, "iat": now},
            hmac_secret=key.challenge, hmac_key_secret=key.derived,
        )
        result: dict[str, Any] = challenge.to_dict()
        return result

    def check(self, raw: object) -> PowVerdict:
        """Verify a solution (signature, expiry, derived key). Does not record it."""
        payload = _decode(raw)
        if payload is None:
            return _MALFORMED
        params = payload["challenge"]["parameters"]
        data = params.get("data")
        if not isinstance(data, dict):
            return _INVALID
        key = self.keys.get(data.get("k"))
        if key is None:
            return _INVALID
        try:
            parsed = altcha.Payload.from_dict(payload)
            result = altcha.verify_solution(parsed, key.challenge, hmac_key_secret=key.derived)
        except (ValueError, KeyError, TypeError, RecursionError):
            return _MALFORMED
        expires_at = params.get("expiresAt")
        if result.expired and not result.invalid_signature:
            return PowVerdict("expired")
        if not result.verified or not params.get("keySignature"):
            return _INVALID
        # Signed by us from here on; still check the shape, since a key rotation or an old
        # release could have signed something else.
        scope, level, binding, issued = data.get("s"), data.get("l"), data.get("b"), data.get("iat")
        if not (isinstance(scope, str) and type(level) is int and isinstance(binding, str)
                and type(issued) is int and type(expires_at) is int):
            return _INVALID
        if not 1 <= level <= len(self.levels):
            return _INVALID
        if expires_at <= self.clock.now():  # our clock, not only the library's time.time()
            return PowVerdict("expired")
        return PowVerdict("ok", scope, level, binding, str(params.get("nonce")), issued, expires_at)
