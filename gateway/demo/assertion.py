"""The demo backend's check of X-Tsgate-Assertion: the short-lived JWT tsgate signs for every
authenticated request (aud = this backend), verified with tsgate's public JWKS.

Enabled when DEMO_TSGATE_JWKS_URL is set (``tsgate demo`` sets it). Then identity headers without
a valid assertion bound to the same decision id are refused: a request that did not come through
tsgate cannot claim to be anybody."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import jwt

__all__ = ["AssertionRefused", "verify_assertion"]


class AssertionRefused(Exception):
    """The identity headers are not vouched for by a valid assertion."""


@lru_cache(maxsize=4)
def _client(url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=2)


def verify_assertion(assertion: str | None, decision_id: str | None) -> dict[str, Any] | None:
    """The assertion's claims, None when checking is off; raises AssertionRefused when it fails."""
    url = os.environ.get("DEMO_TSGATE_JWKS_URL")
    if not url:
        return None
    if not assertion:
        raise AssertionRefused("missing X-Tsgate-Assertion")
    try:
        key = _client(url).get_signing_key_from_jwt(assertion).key
        claims: dict[str, Any] = jwt.decode(
            assertion, key, algorithms=["EdDSA", "ES256"],
            audience=os.environ.get("DEMO_TSGATE_AUDIENCE", "upstream"),
            issuer=os.environ.get("DEMO_TSGATE_ISSUER", "tsgate"),
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except Exception as exc:  # every JOSE failure is a refusal
        raise AssertionRefused(f"invalid X-Tsgate-Assertion: {type(exc).__name__}") from exc
    if decision_id is None or claims.get("did") != decision_id:
        raise AssertionRefused("the assertion belongs to another request")
    return claims
