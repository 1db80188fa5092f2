"""External authenticators: a backend's own JWTs verified with the operator's keys and algorithms."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authn.external import ExternalAuthenticator, JwksCache

SECRET = b"backend-shared-secret-0123456789abcdef"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "u-1", "iss": "backend", "exp": now + 300, "iat": now, **extra}


def rsa_pair() -> tuple[rsa.RSAPrivateKey, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public_pem


async def test_hmac_token_verified_with_roles() -> None:
    """An HS256 token with the right secret gives an external principal with its roles."""
    auth = ExternalAuthenticator(name="b", header="authorization", scheme="Token", algorithms=["HS256"], key=SECRET,
                                 issuer="backend", roles_claim="scope")
    token = jwt.encode(claims(scope=["user", "mod\r\nX-Evil: 1"]), SECRET, algorithm="HS256")
    principal = await auth.verify(token)
    assert principal is not None and principal.id == "ext:b:u-1" and principal.kind == "external"
    assert principal.roles == frozenset({"user"})  # a role that could break a header line is dropped


async def test_rs_hs_key_confusion_refused() -> None:
    """An RS256 authenticator refuses an HS256 token signed with its public key as the secret."""
    private, public_pem = rsa_pair()
    auth = ExternalAuthenticator(name="b", header="authorization", scheme="Bearer", algorithms=["RS256"],
                                 key=public_pem)
    assert await auth.verify(jwt.encode(claims(), private, algorithm="RS256")) is not None
    import base64
    import hashlib
    import hmac
    import json

    def enc(part: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()

    unsigned = f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc(claims())}"
    mac = hmac.new(public_pem.encode(), unsigned.encode(), hashlib.sha256).digest()
    forged = unsigned + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert await auth.verify(forged) is None


@pytest.mark.parametrize("bad", [claims(exp=int(time.time()) - 100), claims(iss="other"), {"iss": "backend"}])
async def test_expired_wrong_issuer_missing_claims(bad: dict[str, Any]) -> None:
    """Expired, wrong-issuer and exp/sub-less tokens are refused."""
    auth = ExternalAuthenticator(name="b", header="authorization", scheme="Token", algorithms=["HS256"], key=SECRET,
                                 issuer="backend")
    assert await auth.verify(jwt.encode(bad, SECRET, algorithm="HS256")) is None


async def test_jwks_fetched_cached_and_rate_bound() -> None:
    """JWKS keys are fetched once, reused, and an unknown kid re-fetches at most once per period."""
    private, _ = rsa_pair()
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk["kid"] = "k1"
    fetches: list[str] = []

    def fetch(url: str, timeout: float) -> dict[str, Any]:  # stands in for the backend's JWKS endpoint
        fetches.append(url)
        return {"keys": [jwk]}

    cache = JwksCache("https://backend.example/jwks", refetch_every=0.5, fetch=fetch)
    auth = ExternalAuthenticator(name="b", header="authorization", scheme="Bearer", algorithms=["RS256"], jwks=cache)
    good = jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "k1"})
    assert await auth.verify(good) is not None
    assert await auth.verify(good) is not None
    for i in range(20):  # a flood of random kids must not hammer the JWKS endpoint
        assert await auth.verify(jwt.encode(claims(), private, algorithm="RS256", headers={"kid": f"r{i}"})) is None
    assert len(fetches) == 1  # within the period, unknown kids do not trigger another fetch
    import asyncio

    await asyncio.sleep(0.6)
    assert await auth.verify(jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "new"})) is None
    assert len(fetches) == 2  # after the period, one re-fetch for an unknown kid


async def test_jwks_outage_is_not_an_error() -> None:
    """A JWKS endpoint that fails leaves tokens unverifiable (None), never an exception."""
    def fetch(url: str, timeout: float) -> dict[str, Any]:
        raise OSError("connection refused")

    auth = ExternalAuthenticator(name="b", header="authorization", scheme="Bearer", algorithms=["RS256"],
                                 jwks=JwksCache("https://backend.example/jwks", fetch=fetch))
    private, _ = rsa_pair()
    assert await auth.verify(jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "k"})) is None
