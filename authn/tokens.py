"""Access tokens and upstream assertions: JWTs (RFC 7519) signed as JWS (RFC 7515) with EdDSA
(RFC 8037) or ES256, verified by the rules of RFC 8725 (JWT BCP).

Verification never lets the token choose anything: the header is parsed and checked by us
before any cryptography (size, shape, allowed members only, a ``kid`` that is a dictionary key in
the ring, and an ``alg`` that must EQUAL that key's algorithm), then pyjwt checks the signature
with an explicit one-element ``algorithms=`` list and ``require``. So ``alg: none``, HS256 keyed
with the public key, ``jku``/``x5u``/``jwk`` key injection and ``crit`` extensions all fail the
same way. Every failure is one ``InvalidToken``; the reason is logged at debug level only.

Times come from the injected Clock (pyjwt reads the system clock, so its time checks are off and
ours run instead, with the same leeway)."""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authn.errors import InvalidToken
from authn.keys import SigningKeyRing, b64url_decode, b64url_encode
from gateway.core.clock import Clock, SystemClock

__all__ = ["AccessClaims", "AccessTokens", "Assertions"]

log = logging.getLogger("tsgate.authn.tokens")

MAX_TOKEN_BYTES: Final = 4096
MAX_HEADER_BYTES: Final = 1024
_HEADER_MEMBERS: Final = frozenset({"alg", "typ", "kid"})
_ACCESS_TYP: Final = "at+jwt"  # RFC 9068 §2.1: explicit typing keeps assertions from passing as access tokens
_ASSERTION_TYP: Final = "JWT"
_ACCESS_CLAIMS: Final = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti")
_ASSERTION_CLAIMS: Final = ("exp", "iat", "iss", "aud", "sub", "jti")
_RESERVED: Final = frozenset({*_ACCESS_CLAIMS, "roles", "sid", "did", "risk"})


@dataclass(frozen=True, slots=True)
class AccessClaims:
    sub: str
    roles: tuple[str, ...]
    sid: str
    jti: str
    iat: float
    exp: float
    nbf: float
    iss: str
    aud: str
    raw: dict[str, Any]


def _refuse(reason: str) -> NoReturn:
    raise _Refused(reason)


class _Refused(Exception):
    """Internal: a named verification failure, turned into InvalidToken at the boundary."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Duplicate members are the classic parser-differential trick; refuse them (RFC 7515 §5.2).
    obj = dict(pairs)
    if len(obj) != len(pairs):
        _refuse("duplicate JSON member")
    return obj


def _numeric_date(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _refuse(f"{name} is not a NumericDate")
    return float(value)


class _Verifier:
    """The shared strict JWS/JWT check for one issuer and one token type."""

    __slots__ = ("_clock", "_headers", "_issuer", "_leeway", "_options", "_ring", "_typ")

    def __init__(
        self, ring: SigningKeyRing, *, issuer: str, typ: str, require: Sequence[str], leeway: float, clock: Clock
    ) -> None:
        self._ring, self._issuer, self._typ, self._leeway, self._clock = ring, issuer, typ, leeway, clock
        self._headers: dict[str, str] = {}  # kid → encoded protected header, for sign()
        self._options: dict[str, Any] = {
            "require": list(require),
            "strict_aud": True,  # aud must be exactly our string, not a list that contains it
            "verify_exp": False,  # pyjwt reads the system clock; check_times uses ours
            "verify_nbf": False,
            "verify_iat": False,
        }

    def header(self, token: object) -> tuple[str, str, list[str]]:
        """(kid, alg, parts) after the pre-crypto checks."""
        if not isinstance(token, str) or not token.isascii() or len(token) > MAX_TOKEN_BYTES:
            _refuse("not an ASCII string of at most 4096 bytes")
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            _refuse("not three non-empty parts")
        raw = b64url_decode(parts[0])
        if len(raw) > MAX_HEADER_BYTES:
            _refuse("header too large")
        header = json.loads(raw, object_pairs_hook=_no_duplicates)
        if not isinstance(header, dict):
            _refuse("header is not an object")
        if not header.keys() <= _HEADER_MEMBERS:
            # jku, x5u, jwk, x5c, x5t, crit and anything else: we never fetch or trust keys
            # named by the token, and we understand no extensions (RFC 8725 §3.10, RFC 7515 §4.1.11).
            _refuse(f"header members {sorted(header.keys() - _HEADER_MEMBERS)} are not allowed")
        kid, alg, typ = header.get("kid"), header.get("alg"), header.get("typ")
        if not isinstance(kid, str) or not isinstance(alg, str) or typ != self._typ:
            _refuse("header needs string kid and alg and the expected typ")
        key = self._ring.get(kid)
        if key is None:
            _refuse("unknown kid")
        if alg != key.alg:
            _refuse(f"alg {alg!r} is not the algorithm of key {kid}")
        return kid, alg, parts

    def claims(self, token: str, kid: str, alg: str, audience: str) -> dict[str, Any]:
        public = self._ring.public_key(kid)
        if public is None:
            _refuse("unknown kid")
        claims: dict[str, Any] = jwt.decode(
            token,
            key=public,
            algorithms=[alg],
            audience=audience,
            issuer=self._issuer,
            leeway=self._leeway,
            options=self._options,  # type: ignore[arg-type]  # pyjwt's TypedDict, built once
        )
        self.check_times(claims)
        return claims

    def check_times(self, claims: Mapping[str, Any]) -> None:
        now, leeway = self._clock.now(), self._leeway
        if _numeric_date(claims, "exp") <= now - leeway:
            _refuse("expired")
        if "nbf" in claims and _numeric_date(claims, "nbf") > now + leeway:
            _refuse("not yet valid (nbf)")
        if _numeric_date(claims, "iat") > now + leeway:
            _refuse("issued in the future (iat)")

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Compact JWS (RFC 7515 §7.1) written directly: this runs for every authenticated request
        (the upstream assertion), and pyjwt's generic encoder cost as much as the signature."""
        key = self._ring.signing_key
        header = self._headers.get(key.kid)
        if header is None:
            raw = json.dumps({"alg": key.alg, "kid": key.kid, "typ": self._typ}, separators=(",", ":"))
            header = self._headers[key.kid] = b64url_encode(raw.encode())
        payload = b64url_encode(json.dumps(dict(claims), separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode("ascii")
        private = key.private_key
        if isinstance(private, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants raw R||S (RFC 7518 §3.4)
        else:
            signature = private.sign(signing_input)
        return f"{header}.{payload}.{b64url_encode(signature)}"


def _guarded(what: str, exc: Exception) -> InvalidToken:
    """Translate any failure at the verification boundary into the one InvalidToken."""
    reason = str(exc) if isinstance(exc, _Refused) else f"{type(exc).__name__}: {exc}"
    log.debug("%s refused: %s", what, reason)
    return InvalidToken("invalid token")


def _string_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        _refuse("roles is not a list of strings")
    return tuple(value)


class AccessTokens:
    """Issue and verify the gateway's access tokens (``typ: at+jwt``), with a bounded cache of
    verified tokens so that the signature is checked once per token, not once per request."""

    def __init__(
        self,
        ring: SigningKeyRing,
        *,
        issuer: str,
        audience: str,
        ttl: float = 600,
        leeway: float = 30,
        clock: Clock | None = None,
        cache_size: int = 10_000,
    ) -> None:
        self._clock = clock or SystemClock()
        self._ring, self._audience, self._issuer, self._ttl, self._leeway = ring, audience, issuer, ttl, leeway
        self._verifier = _Verifier(
            ring, issuer=issuer, typ=_ACCESS_TYP, require=_ACCESS_CLAIMS, leeway=leeway, clock=self._clock
        )
        # The exact token string -> (kid, claims): a hit means "this very token was verified", so a
        # forged token reusing a cached kid or jti goes through full verification. A hit skips
        # the header parse and the signature (~1 µs instead of ~20-200 µs) but still checks the
        # clock and that its key is still in the ring. (kid, jti) -> token serves ``forget``.
        self._cache: OrderedDict[str, tuple[str, AccessClaims]] = OrderedDict()
        self._slots: dict[tuple[str, str], str] = {}
        self._cache_size = cache_size
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def leeway(self) -> float:
        return self._leeway

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def audience(self) -> str:
        return self._audience

    @property
    def ring(self) -> SigningKeyRing:
        return self._ring

    def issue(
        self, sub: str, roles: Sequence[str], sid: str, extra: Mapping[str, Any] | None = None
    ) -> tuple[str, AccessClaims]:
        """A signed access token and its claims. ``extra`` may not override registered claims."""
        if extra and not extra.keys().isdisjoint(_RESERVED):
            raise ValueError(f"extra claims may not override {sorted(extra.keys() & _RESERVED)}")
        now = math.floor(self._clock.now())
        raw: dict[str, Any] = {
            **(extra or {}),
            "iss": self._issuer,
            "aud": self._audience,
            "sub": sub,
            "exp": now + math.ceil(self._ttl),
            "iat": now,
            "nbf": now,
            "jti": secrets.token_urlsafe(16),
            "roles": list(roles),
            "sid": sid,
        }
        return self._verifier.sign(raw), _access_claims(raw)

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; ``InvalidToken`` for every failure, whatever the input."""
        try:
            return self._verify(token)
        except Exception as exc:  # the boundary: pyjwt, cryptography, json, base64, ours
            raise _guarded("access token", exc) from exc

    def _verify(self, token: str) -> AccessClaims:
        cached = self._cache.get(token) if isinstance(token, str) else None
        if cached is not None and self._ring.get(cached[0]) is not None:  # a retired key ends its tokens
            self.cache_hits += 1
            self._verifier.check_times(cached[1].raw)  # a cached token still expires
            return cached[1]
        kid, alg, _ = self._verifier.header(token)
        self.cache_misses += 1
        raw = self._verifier.claims(token, kid, alg, self._audience)
        claims = _access_claims(raw)
        self._remember(token, kid, claims)
        return claims

    def _remember(self, token: str, kid: str, claims: AccessClaims) -> None:
        if self._cache_size <= 0:
            return
        self._cache[token] = (kid, claims)
        self._slots[(kid, claims.jti)] = token
        while len(self._cache) > self._cache_size:  # evict the oldest; a miss only costs a re-verify
            _, (old_kid, old_claims) = self._cache.popitem(last=False)
            self._slots.pop((old_kid, old_claims.jti), None)

    def forget(self, kid: str, jti: str) -> None:
        """Drop one cached entry (e.g. on logout, before the revocation check sees it again)."""
        token = self._slots.pop((kid, jti), None)
        if token is not None:
            self._cache.pop(token, None)


def _access_claims(raw: dict[str, Any]) -> AccessClaims:
    sid = raw.get("sid")
    if not isinstance(sid, str):
        _refuse("sid is not a string")
    return AccessClaims(
        sub=raw["sub"],
        roles=_string_list(raw.get("roles")),
        sid=sid,
        jti=raw["jti"],
        iat=float(raw["iat"]),
        exp=float(raw["exp"]),
        nbf=float(raw["nbf"]),
        iss=raw["iss"],
        aud=raw["aud"],
        raw=raw,
    )


class Assertions:
    """Short-lived JWTs that tell the upstream who the gateway let through and why: ``sub``,
    ``roles``, ``did`` (the decision id) and ``risk``, audience-bound to that upstream."""

    def __init__(
        self, ring: SigningKeyRing, *, issuer: str, ttl: float = 60, leeway: float = 30, clock: Clock | None = None
    ) -> None:
        self._clock = clock or SystemClock()
        self._issuer, self._ttl = issuer, ttl
        self._verifier = _Verifier(
            ring, issuer=issuer, typ=_ASSERTION_TYP, require=_ASSERTION_CLAIMS, leeway=leeway, clock=self._clock
        )

    def issue(self, sub: str, roles: Sequence[str], decision_id: str, risk: str, audience: str) -> str:
        now = math.floor(self._clock.now())
        claims = {
            "iss": self._issuer,
            "aud": audience,
            "sub": sub,
            "roles": list(roles),
            "did": decision_id,
            "risk": risk,
            "iat": now,
            "exp": now + math.ceil(self._ttl),
            "jti": secrets.token_urlsafe(16),
        }
        return self._verifier.sign(claims)

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of a valid assertion for ``audience``; ``InvalidToken`` for every failure."""
        try:
            kid, alg, _ = self._verifier.header(token)
            claims = self._verifier.claims(token, kid, alg, audience)
            _string_list(claims.get("roles"))
            if not isinstance(claims.get("did"), str) or not isinstance(claims.get("risk"), str):
                _refuse("did and risk must be strings")
            return claims
        except Exception as exc:  # the boundary, as in AccessTokens.verify
            raise _guarded("assertion", exc) from exc
