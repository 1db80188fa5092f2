"""External authenticators: verify the JWTs a backend already issues (any scheme, e.g.
``Authorization: Token <jwt>``) and pass the request through unchanged.

The algorithm list is the operator's, never the token's (RFC 8725 §3.1); HMAC and public-key
algorithms are never mixed on one authenticator (the policy refuses it), which closes HS/RS key
confusion. JWKS are cached and re-fetched on an unknown kid at most once per ``refetch_every``
seconds, so a flood of random kids cannot turn tsgate into a JWKS hammer."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import jwt

from gateway.core.context import Principal

__all__ = ["ExternalAuthenticator", "JwksCache"]

log = logging.getLogger("tsgate.authn.external")

FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
SAFE_SUBJECT = re.compile(r"[\x21-\x7e]{1,256}")  # visible ASCII: safe as a header value
SAFE_ROLE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_TOKEN_BYTES = 8192


def _fetch_json(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - operator-configured URL
        data = json.loads(response.read(1 << 20))
    if not isinstance(data, dict):
        raise ValueError("JWKS is not a JSON object")
    return data


class JwksCache:
    """kid → key from a JWKS URL, refreshed on an unknown kid (rate-bound)."""

    def __init__(self, url: str, *, refetch_every: float = 30.0, timeout: float = 2.0,
                 fetch: Callable[[str, float], dict[str, Any]] = _fetch_json) -> None:
        self.url = url
        self.refetch_every = refetch_every
        self.timeout = timeout
        self._fetch = fetch
        self._keys: dict[str, Any] = {}
        self._fetched_at = -1e18
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> Any | None:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at >= self.refetch_every:
                self._fetched_at = time.monotonic()
                try:
                    data = await asyncio.to_thread(self._fetch, self.url, self.timeout)
                    self._keys = {k.get("kid", ""): jwt.PyJWK(k).key for k in data.get("keys", [])
                                  if isinstance(k, dict)}
                except Exception as exc:  # a JWKS outage must not become a 500; keep the old keys
                    log.warning("JWKS fetch from %s failed: %s", self.url, exc)
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid or "")


class ExternalAuthenticator:
    def __init__(
        self,
        *,
        name: str,
        header: str,
        scheme: str,
        algorithms: Sequence[str],
        key: Any | None = None,
        jwks: JwksCache | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        subject_claim: str = "sub",
        roles_claim: str | None = None,
        leeway: float = 30.0,
    ) -> None:
        self.name = name
        self.header = header.lower().encode("latin-1")
        self.scheme = scheme.lower()
        self.algorithms = list(algorithms)
        self._key = key
        self._jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.subject_claim = subject_claim
        self.roles_claim = roles_claim
        self.leeway = leeway

    def credential(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The token this authenticator would verify, or None when the request carries none."""
        for name, value in headers:
            if name != self.header:
                continue
            text = value.decode("latin-1").strip()
            if not self.scheme:
                return text
            scheme, _, token = text.partition(" ")
            if scheme.lower() == self.scheme and token.strip():
                return token.strip()
        return None

    async def verify(self, token: str) -> Principal | None:
        """A principal for a valid token; None for any failure (reason logged at debug)."""
        if len(token) > MAX_TOKEN_BYTES:
            return None
        try:
            header = jwt.get_unverified_header(token)
            if FORBIDDEN_HEADERS & header.keys() or header.get("alg") not in self.algorithms:
                return None
            key = self._key if self._jwks is None else await self._jwks.key(header.get("kid"))
            if key is None:
                return None
            claims = jwt.decode(
                token, key, algorithms=self.algorithms, issuer=self.issuer, audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", self.subject_claim], "verify_aud": self.audience is not None},
            )
        except Exception as exc:  # every JOSE/crypto/parse failure is "not a valid token"
            log.debug("external authenticator %s refused a token: %s", self.name, exc)
            return None
        subject = claims.get(self.subject_claim)
        # The subject becomes the X-Tsgate-User header value: refuse anything that could break
        # out of a header line (CR, LF, NUL, other controls) or is unreasonably long.
        if not isinstance(subject, str | int) or not SAFE_SUBJECT.fullmatch(str(subject)):
            return None
        return Principal(id=f"ext:{self.name}:{subject}", kind="external", roles=self._roles(claims),
                         name=str(subject), claims=claims)

    def _roles(self, claims: dict[str, Any]) -> frozenset[str]:
        if not self.roles_claim:
            return frozenset()
        value = claims.get(self.roles_claim)
        if isinstance(value, str):
            roles = value.split()
        elif isinstance(value, list):
            roles = [v for v in value if isinstance(v, str)]
        else:
            return frozenset()
        return frozenset(r for r in roles if SAFE_ROLE.fullmatch(r))
