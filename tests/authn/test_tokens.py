"""Access tokens and assertions: SECURITY.md class 4 (token attacks) at the JWS layer, the verified
token cache, interop with a third-party verifier (joserfc), and hypothesis fuzzing of verify."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, KeySet, OKPKey

from authn.errors import InvalidToken
from authn.keys import SigningAlg, SigningKey, SigningKeyRing, b64url_decode, b64url_encode, jwks
from authn.tokens import AccessClaims, AccessTokens, Assertions
from gateway.core.clock import FrozenClock

ISS, AUD = "https://gateway.test", "tsgate-api"
ALGS: list[SigningAlg] = ["EdDSA", "ES256"]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(params=ALGS)
def ring(request: pytest.FixtureRequest, clock: FrozenClock) -> SigningKeyRing:
    return SigningKeyRing.generate(request.param, clock=clock)


@pytest.fixture
def tokens(ring: SigningKeyRing, clock: FrozenClock) -> AccessTokens:
    return AccessTokens(ring, issuer=ISS, audience=AUD, clock=clock)


def refused(verify: Callable[[str], object], token: str) -> None:
    """Every failure is the same InvalidToken with the same message: nothing for a prober to learn."""
    with pytest.raises(InvalidToken) as info:
        verify(token)
    assert str(info.value) == "invalid token"


def sign(alg: str, key: Any, signing_input: bytes) -> bytes:
    return jwt.get_algorithm_by_name(alg).sign(signing_input, key)


def forge(header: dict[str, Any] | bytes, claims: dict[str, Any] | bytes, signer: Callable[[bytes], bytes]) -> str:
    """A compact JWS with exactly these header and payload bytes, signed by ``signer``."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{b64url_encode(h)}.{b64url_encode(p)}".encode()
    return f"{signing_input.decode()}.{b64url_encode(signer(signing_input))}"


def good_header(key: SigningKey, **changes: Any) -> dict[str, Any]:
    return {"alg": key.alg, "kid": key.kid, "typ": "at+jwt", **changes}


def good_claims(clock: FrozenClock, **changes: Any) -> dict[str, Any]:
    now = int(clock.now())
    claims = {
        "iss": ISS,
        "aud": AUD,
        "sub": "u1",
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "jti": "j-1",
        "roles": ["user"],
        "sid": "s-1",
    }
    claims.update(changes)
    return claims


def hmac_signer(secret: bytes, digest: str) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, digest).digest()


def real_signer(key: SigningKey) -> Callable[[bytes], bytes]:
    return lambda data: sign(key.alg, key.private_key, data)


def test_issue_and_verify_round_trip(tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock) -> None:
    """An issued token verifies to the same claims, with the registered claims and ttl we set."""
    token, claims = tokens.issue("u1", ["user", "mod"], "s-1", extra={"name": "ada"})
    verified = tokens.verify(token)
    assert verified == claims
    assert (verified.sub, verified.roles, verified.sid, verified.iss, verified.aud) == (
        "u1",
        ("user", "mod"),
        "s-1",
        ISS,
        AUD,
    )
    assert verified.exp - verified.iat == 600 and verified.nbf == verified.iat == int(clock.now())
    assert verified.raw["name"] == "ada"
    assert len(b64url_decode(verified.jti)) == 16


def test_header_is_explicitly_typed_and_names_the_signing_kid(tokens: AccessTokens, ring: SigningKeyRing) -> None:
    """The header is exactly alg (the key's), typ at+jwt (RFC 9068) and the signing key's kid."""
    token, _ = tokens.issue("u1", [], "s-1")
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header == {"alg": ring.signing_key.alg, "typ": "at+jwt", "kid": ring.signing_key.kid}


def test_extra_claims_cannot_override_registered_claims(tokens: AccessTokens) -> None:
    """A caller bug that tries to set sub/exp/roles through extra fails loudly."""
    with pytest.raises(ValueError, match="exp"):
        tokens.issue("u1", [], "s-1", extra={"exp": 2**40})


@pytest.mark.parametrize("signature", [b"", b"\x00" * 64])
def test_alg_none_with_a_valid_kid_is_refused(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock, signature: bytes
) -> None:
    """alg: none (unsigned, or with junk signature) fails even when the kid is a real key."""
    token = forge(good_header(ring.signing_key, alg="none"), good_claims(clock), lambda _: signature)
    refused(tokens.verify, token)


@pytest.mark.parametrize("form", ["pem", "der", "raw"])
def test_hs256_keyed_with_the_public_key_is_refused(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock, form: str
) -> None:
    """Key confusion: HMAC-SHA256 with the public key bytes as the secret (RFC 8725 §2.1) fails."""
    public = ring.signing_key.public_key()
    if form == "pem":
        secret = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    elif form == "der":
        secret = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        secret = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    else:
        secret = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    token = forge(
        good_header(ring.signing_key, alg="HS256"),
        good_claims(clock),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )
    refused(tokens.verify, token)


@pytest.mark.parametrize("which", ["jwk-json", "jwks-json", "x-member"])
def test_public_jwk_as_hmac_secret_is_refused(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock, which: str
) -> None:
    """JWK-as-HMAC-secret: HS256 keyed with the published JWK (or JWKS, or its x bytes) fails."""
    jwk = ring.signing_key.public_jwk()
    secret = {
        "jwk-json": json.dumps(jwk).encode(),
        "jwks-json": json.dumps(jwks(ring)).encode(),
        "x-member": b64url_decode(jwk["x"]),
    }[which]
    for alg, digest in (("HS256", "sha256"), ("HS384", "sha384"), ("HS512", "sha512")):
        token = forge(good_header(ring.signing_key, alg=alg), good_claims(clock), hmac_signer(secret, digest))
        refused(tokens.verify, token)


def test_alg_switch_to_the_other_key_type_is_refused(clock: FrozenClock) -> None:
    """A kid names one key and one algorithm: an ES256 signature under an EdDSA kid fails."""
    ed = SigningKey.generate("EdDSA", created=clock.now())
    es = SigningKey.generate("ES256", created=clock.now(), status="retired")
    tokens = AccessTokens(SigningKeyRing([ed, es]), issuer=ISS, audience=AUD, clock=clock)
    token = forge(good_header(ed, alg="ES256"), good_claims(clock), real_signer(es))
    refused(tokens.verify, token)
    assert tokens.verify(forge(good_header(es), good_claims(clock), real_signer(es))).sub == "u1"


@pytest.mark.parametrize(
    "kid",
    ["../../etc/passwd", "' OR 1=1 --", "unknown", "", "/dev/null", "https://evil.test/jwks.json", "kid\x00", "$(id)"],
)
def test_kid_injection_is_refused(tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock, kid: str) -> None:
    """A kid that is a path, SQL, URL or unknown fails, even with a signature by a real ring key."""
    token = forge(good_header(ring.signing_key, kid=kid), good_claims(clock), real_signer(ring.signing_key))
    refused(tokens.verify, token)


def test_non_string_kid_is_refused(tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock) -> None:
    """A kid that is a number, list or object (lookup confusion) fails."""
    for kid in (0, [ring.signing_key.kid], {"kid": ring.signing_key.kid}, None):
        token = forge(good_header(ring.signing_key, kid=kid), good_claims(clock), real_signer(ring.signing_key))
        refused(tokens.verify, token)


@pytest.mark.parametrize(
    "member, value",
    [
        ("jku", "https://evil.test/jwks.json"),
        ("x5u", "https://evil.test/cert.pem"),
        ("jwk", {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
        ("x5c", ["MIIBszCCAVmgAwIBAgIU"]),
        ("x5t", "dGh1bWJwcmludA"),
        ("x5t#S256", "dGh1bWJwcmludA"),
        ("cty", "JWT"),
        ("zip", "DEF"),
    ],
)
def test_key_url_and_embedded_key_headers_are_refused(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock, member: str, value: object
) -> None:
    """jku/x5u/embedded jwk/x5c/x5t (and any other header member) fail, even correctly signed."""
    header = good_header(ring.signing_key, **{member: value})
    refused(tokens.verify, forge(header, good_claims(clock), real_signer(ring.signing_key)))


def test_embedded_attacker_jwk_with_matching_signature_is_refused(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock
) -> None:
    """A token that carries its own key and is signed by it (CVE-2018-0114 class) fails."""
    attacker = Ed25519PrivateKey.generate()
    raw = attacker.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    header = {
        "alg": "EdDSA",
        "kid": ring.signing_key.kid,
        "typ": "at+jwt",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)},
    }
    refused(tokens.verify, forge(header, good_claims(clock), lambda data: attacker.sign(data)))


def test_crit_header_is_refused(tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock) -> None:
    """A crit extension we do not understand fails (RFC 7515 §4.1.11), even if correctly signed."""
    header = good_header(ring.signing_key, crit=["exp"], exp=0)
    refused(tokens.verify, forge(header, good_claims(clock), real_signer(ring.signing_key)))
    header = good_header(ring.signing_key, crit=[])
    refused(tokens.verify, forge(header, good_claims(clock), real_signer(ring.signing_key)))


def test_wrong_or_missing_typ_is_refused(tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock) -> None:
    """Explicit typing (RFC 8725 §3.11): typ JWT, a foreign typ or no typ fails as an access token."""
    for header in (
        good_header(ring.signing_key, typ="JWT"),
        good_header(ring.signing_key, typ="AT+JWT"),
        {"alg": ring.signing_key.alg, "kid": ring.signing_key.kid},
    ):
        refused(tokens.verify, forge(header, good_claims(clock), real_signer(ring.signing_key)))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat", "jti", "sub", "iss", "aud", "sid", "roles"])
@pytest.mark.parametrize("how", ["missing", "null"])
def test_missing_claim_is_refused(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock, claim: str, how: str
) -> None:
    """A correctly signed token without (or with a null) exp/nbf/iat/jti/sub/iss/aud/sid/roles fails."""
    claims = good_claims(clock)
    if how == "missing":
        del claims[claim]
    else:
        claims[claim] = None
    refused(tokens.verify, forge(good_header(ring.signing_key), claims, real_signer(ring.signing_key)))


@pytest.mark.parametrize(
    "claim, value",
    [
        ("exp", "2000000000"),
        ("exp", True),
        ("iat", [1]),
        ("nbf", {"t": 1}),
        ("sub", 7),
        ("jti", 7),
        ("roles", "admin"),
        ("roles", [1]),
        ("sid", 5),
        ("aud", [AUD]),
        ("aud", [AUD, "other"]),
    ],
)
def test_mistyped_claim_is_refused(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock, claim: str, value: object
) -> None:
    """Claims of the wrong JSON type fail (including aud as a list: we require exactly our string)."""
    claims = good_claims(clock, **{claim: value})
    refused(tokens.verify, forge(good_header(ring.signing_key), claims, real_signer(ring.signing_key)))


def test_expired_token_is_refused_after_ttl_plus_leeway(tokens: AccessTokens, clock: FrozenClock) -> None:
    """A token verifies until exp + leeway and fails from then on (frozen clock, no sleeps)."""
    token, _ = tokens.issue("u1", [], "s-1")
    clock.advance(600 + 29)
    tokens.verify(token)
    clock.advance(1)
    refused(tokens.verify, token)


def test_nbf_in_the_future_is_refused(tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock) -> None:
    """nbf beyond the leeway fails; within the leeway passes."""
    now = int(clock.now())
    late = forge(good_header(ring.signing_key), good_claims(clock, nbf=now + 31), real_signer(ring.signing_key))
    refused(tokens.verify, late)
    ok = forge(good_header(ring.signing_key), good_claims(clock, nbf=now + 30), real_signer(ring.signing_key))
    assert tokens.verify(ok).sub == "u1"


def test_iat_in_the_future_is_refused(tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock) -> None:
    """A token issued in the future (beyond the leeway) fails."""
    now = int(clock.now())
    claims = good_claims(clock, iat=now + 3600, exp=now + 7200)
    refused(tokens.verify, forge(good_header(ring.signing_key), claims, real_signer(ring.signing_key)))


@pytest.mark.parametrize(
    "claim, value",
    [
        ("aud", "someone-else"),
        ("aud", AUD + " "),
        ("iss", "https://evil.test"),
        ("iss", ISS + "/"),
        ("iss", "gateway.test"),
    ],
)
def test_wrong_audience_or_issuer_is_refused(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock, claim: str, value: str
) -> None:
    """A correctly signed token for another audience or from another issuer fails."""
    claims = good_claims(clock, **{claim: value})
    refused(tokens.verify, forge(good_header(ring.signing_key), claims, real_signer(ring.signing_key)))


def test_oversized_token_is_refused(tokens: AccessTokens) -> None:
    """A correctly signed token over 4096 bytes fails before any crypto."""
    token, _ = tokens.issue("u1", [], "s-1", extra={"pad": "x" * 4096})
    assert len(token) > 4096
    refused(tokens.verify, token)


def test_oversized_header_is_refused(tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock) -> None:
    """A header over 1024 bytes fails even when it is otherwise valid (whitespace padding)."""
    key = ring.signing_key
    header = f'{{"alg":"{key.alg}",{" " * 1024}"kid":"{key.kid}","typ":"at+jwt"}}'.encode()
    refused(tokens.verify, forge(header, good_claims(clock), real_signer(key)))


@pytest.mark.parametrize("depth", [1, 50, 400, 3000])
def test_deeply_nested_header_is_refused(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock, depth: int
) -> None:
    """Nested values in the header (in an extra member or in alg itself) fail; depth never crashes."""
    nested = "[" * depth + "]" * depth
    key = ring.signing_key
    for header in (
        f'{{"alg":"{key.alg}","kid":"{key.kid}","typ":"at+jwt","x":{nested}}}',
        f'{{"alg":{nested},"kid":"{key.kid}","typ":"at+jwt"}}',
        nested,
    ):
        refused(tokens.verify, forge(header.encode(), good_claims(clock), real_signer(key)))


def test_duplicate_header_members_are_refused(tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock) -> None:
    """Duplicate header members (a parser-differential trick) fail, whichever copy is last."""
    key = ring.signing_key
    for header in (
        f'{{"alg":"HS256","alg":"{key.alg}","kid":"{key.kid}","typ":"at+jwt"}}',
        f'{{"alg":"{key.alg}","kid":"{key.kid}","kid":"{key.kid}","typ":"at+jwt"}}',
    ):
        refused(tokens.verify, forge(header.encode(), good_claims(clock), real_signer(key)))


def test_token_signed_by_a_key_not_in_the_ring_is_refused(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock
) -> None:
    """A foreign key of the right type, presenting a ring kid, fails the signature check."""
    foreign = SigningKey.generate(ring.signing_key.alg, created=clock.now())
    refused(tokens.verify, forge(good_header(ring.signing_key), good_claims(clock), real_signer(foreign)))
    refused(tokens.verify, forge(good_header(foreign), good_claims(clock), real_signer(foreign)))


def test_tampered_token_is_refused(tokens: AccessTokens) -> None:
    """Changing the payload (roles to admin), the header or one signature bit fails."""
    token, _ = tokens.issue("u1", ["user"], "s-1")
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["roles"] = ["admin"]
    refused(tokens.verify, f"{header}.{b64url_encode(json.dumps(claims).encode())}.{signature}")
    reordered = json.dumps(dict(reversed(list(json.loads(b64url_decode(header)).items())))).encode()
    refused(tokens.verify, f"{b64url_encode(reordered)}.{payload}.{signature}")
    flipped = bytearray(b64url_decode(signature))
    flipped[0] ^= 1
    refused(tokens.verify, f"{header}.{payload}.{b64url_encode(bytes(flipped))}")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + ".",
        lambda t: t.rsplit(".", 1)[0],
        lambda t: t.replace(".", "..", 1),
        lambda t: t + "=",
        lambda t: " " + t,
        lambda t: t + "\n",
        lambda t: t.replace("-", "+").replace("_", "/") + "é",
        lambda t: "",
    ],
)
def test_malformed_compact_serialization_is_refused(tokens: AccessTokens, mangle: Callable[[str], str]) -> None:
    """Extra or missing parts, padding, whitespace, non-ASCII and the empty string fail."""
    token, _ = tokens.issue("u1", [], "s-1")
    refused(tokens.verify, mangle(token))


def test_non_canonical_base64_signature_is_refused(tokens: AccessTokens) -> None:
    """A signature spelled with different trailing bits (same bytes, other string) fails."""
    token, _ = tokens.issue("u1", [], "s-1")
    head, sig = token.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    twin = sig[:-1] + alphabet[last ^ 1]  # 64 signature bytes in 86 characters leave 4 spare bits
    refused(tokens.verify, f"{head}.{twin}")


def test_rotation_retired_key_verifies_and_new_key_signs(clock: FrozenClock) -> None:
    """After rotate, tokens from the retired key still verify and new tokens carry the new kid."""
    ring = SigningKeyRing.generate(clock=clock)
    old_token, _ = AccessTokens(ring, issuer=ISS, audience=AUD, clock=clock).issue("u1", [], "s-1")
    clock.advance(60)
    rotated = ring.rotate("ES256", clock=clock)
    tokens = AccessTokens(rotated, issuer=ISS, audience=AUD, clock=clock)
    assert tokens.verify(old_token).sub == "u1"
    new_token, _ = tokens.issue("u2", [], "s-2")
    header = json.loads(b64url_decode(new_token.split(".")[0]))
    assert header["kid"] == rotated.signing_key.kid != ring.signing_key.kid and header["alg"] == "ES256"
    assert tokens.verify(new_token).sub == "u2"


def test_token_whose_kid_was_dropped_from_the_ring_is_refused(clock: FrozenClock) -> None:
    """Once a retired key ages out of the ring, its tokens fail (even before their own exp)."""
    ring = SigningKeyRing.generate(clock=clock)
    tokens = AccessTokens(ring, issuer=ISS, audience=AUD, ttl=30 * 86_400, clock=clock)
    old_token, _ = tokens.issue("u1", [], "s-1")
    once = ring.rotate(clock=clock)
    clock.advance(8 * 86_400)
    twice = once.rotate(clock=clock)
    assert ring.signing_key.kid not in {key.kid for key in twice.keys}
    assert AccessTokens(once, issuer=ISS, audience=AUD, clock=clock).verify(old_token).sub == "u1"
    refused(AccessTokens(twice, issuer=ISS, audience=AUD, clock=clock).verify, old_token)


def test_cache_hit_skips_crypto_and_still_expires(
    tokens: AccessTokens, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second verify of a token is a cache hit (no pyjwt call), and the hit still expires."""
    token, claims = tokens.issue("u1", [], "s-1")
    first = tokens.verify(token)
    assert first == claims and (tokens.cache_hits, tokens.cache_misses) == (0, 1)

    def no_crypto(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not verify the signature again")

    monkeypatch.setattr(jwt, "decode", no_crypto)
    assert tokens.verify(token) is first
    assert (tokens.cache_hits, tokens.cache_misses) == (1, 1)
    clock.advance(600 + 30)
    refused(tokens.verify, token)
    assert tokens.cache_hits == 2  # it was found, and refused by the clock


def test_different_token_reusing_a_cached_kid_and_jti_does_not_hit(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock
) -> None:
    """A forged token with the kid+jti of a cached one is verified in full (and fails)."""
    token, claims = tokens.issue("u1", ["user"], "s-1")
    tokens.verify(token)
    forged_claims = {**claims.raw, "roles": ["admin"]}
    foreign = SigningKey.generate(ring.signing_key.alg, created=clock.now())
    refused(tokens.verify, forge(good_header(ring.signing_key), forged_claims, real_signer(foreign)))
    header, payload, _ = token.split(".")
    refused(tokens.verify, f"{header}.{payload}.{b64url_encode(b'x' * 64)}")
    assert (tokens.cache_hits, tokens.cache_misses) == (0, 3)
    assert tokens.verify(token).roles == ("user",) and tokens.cache_hits == 1


def test_cache_is_bounded_and_evicts_oldest(ring: SigningKeyRing, clock: FrozenClock) -> None:
    """With cache_size 3 the oldest entries are evicted: a re-verify of them is a miss, not an error."""
    tokens = AccessTokens(ring, issuer=ISS, audience=AUD, clock=clock, cache_size=3)
    issued = [tokens.issue("u1", [], f"s-{i}")[0] for i in range(10)]
    for token in issued:
        tokens.verify(token)
    assert tokens.cache_misses == 10
    tokens.verify(issued[-1])
    assert tokens.cache_hits == 1
    tokens.verify(issued[0])
    assert (tokens.cache_hits, tokens.cache_misses) == (1, 11)


def test_cache_size_zero_disables_the_cache_and_forget_drops_an_entry(ring: SigningKeyRing, clock: FrozenClock) -> None:
    """cache_size=0 never hits; forget(kid, jti) turns the next verify into a miss."""
    uncached = AccessTokens(ring, issuer=ISS, audience=AUD, clock=clock, cache_size=0)
    token, claims = uncached.issue("u1", [], "s-1")
    uncached.verify(token)
    uncached.verify(token)
    assert uncached.cache_hits == 0
    cached = AccessTokens(ring, issuer=ISS, audience=AUD, clock=clock)
    cached.verify(token)
    cached.forget(ring.signing_key.kid, claims.jti)
    cached.verify(token)
    assert (cached.cache_hits, cached.cache_misses) == (0, 2)


def test_assertion_round_trip_and_claims(ring: SigningKeyRing, clock: FrozenClock) -> None:
    """An upstream assertion carries sub, roles, did and risk, bound to the upstream audience, for 60 s."""
    assertions = Assertions(ring, issuer=ISS, clock=clock)
    token = assertions.issue("u1", ["user"], "dec-123", "low", "https://backend.test")
    claims = assertions.verify(token, "https://backend.test")
    assert {k: claims[k] for k in ("iss", "aud", "sub", "roles", "did", "risk")} == {
        "iss": ISS,
        "aud": "https://backend.test",
        "sub": "u1",
        "roles": ["user"],
        "did": "dec-123",
        "risk": "low",
    }
    assert claims["exp"] - claims["iat"] == 60 and json.loads(b64url_decode(token.split(".")[0]))["typ"] == "JWT"
    refused(lambda t: assertions.verify(t, "https://other.test"), token)
    clock.advance(60 + 30)
    refused(lambda t: assertions.verify(t, "https://backend.test"), token)


def test_access_tokens_and_assertions_do_not_cross(ring: SigningKeyRing, clock: FrozenClock) -> None:
    """Same ring, different typ: an assertion is not an access token and vice versa (RFC 8725 §3.11)."""
    tokens = AccessTokens(ring, issuer=ISS, audience=AUD, clock=clock)
    assertions = Assertions(ring, issuer=ISS, clock=clock)
    refused(tokens.verify, assertions.issue("u1", ["admin"], "d", "low", AUD))
    access, _ = tokens.issue("u1", [], "s-1")
    refused(lambda t: assertions.verify(t, AUD), access)


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated via RFC 9864")  # joserfc prefers the RFC 9864 name Ed25519
def test_interop_joserfc_verifies_our_access_token_with_the_jwks(tokens: AccessTokens, ring: SigningKeyRing) -> None:
    """A third-party JOSE library verifies our token with our published JWKS (OKP/EdDSA and EC/ES256)."""
    token, claims = tokens.issue("u1", ["user"], "s-1")
    published = json.loads(json.dumps(jwks(ring)))  # exactly what /.well-known/jwks.json serves
    decoded = jose_jwt.decode(token, KeySet.import_key_set(published), algorithms=[ring.signing_key.alg])
    assert decoded.header == {"alg": ring.signing_key.alg, "kid": ring.signing_key.kid, "typ": "at+jwt"}
    assert decoded.claims == claims.raw


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated via RFC 9864")
def test_interop_we_verify_a_joserfc_signed_token(
    tokens: AccessTokens, ring: SigningKeyRing, clock: FrozenClock
) -> None:
    """A token signed by joserfc with a ring key and our header fields verifies with ours."""
    key = ring.signing_key
    pem = key.to_entry()["pem"]
    jose_key = (OKPKey if key.alg == "EdDSA" else ECKey).import_key(pem)
    token = jose_jwt.encode(good_header(key), good_claims(clock), jose_key, algorithms=[key.alg])
    assert tokens.verify(token).sid == "s-1"


def test_claims_type_is_frozen(tokens: AccessTokens) -> None:
    """AccessClaims is immutable so a cached value cannot be edited by one caller for the next."""
    _, claims = tokens.issue("u1", [], "s-1")
    with pytest.raises(AttributeError):
        claims.sub = "admin"  # type: ignore[misc]
    assert isinstance(claims, AccessClaims)


# --- hypothesis: verify raises nothing but InvalidToken, whatever the input --------------------

_CLOCK = FrozenClock()
_RINGS = {alg: SigningKeyRing.generate(alg, clock=_CLOCK) for alg in ALGS}
_B64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=200)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _only_invalid_token(verify: Callable[..., object], *args: object) -> None:
    try:
        verify(*args)
    except InvalidToken:
        pass


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=600))
def test_fuzz_verify_arbitrary_text_raises_only_invalid_token(text: str) -> None:
    """Arbitrary text never makes verify raise anything but InvalidToken."""
    for ring in _RINGS.values():
        tokens = AccessTokens(ring, issuer=ISS, audience=AUD, clock=_CLOCK)
        _only_invalid_token(tokens.verify, text)
        assertions = Assertions(ring, issuer=ISS, clock=_CLOCK)
        _only_invalid_token(assertions.verify, text, AUD)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_B64, min_size=3, max_size=3))
def test_fuzz_verify_three_base64url_parts_raises_only_invalid_token(parts: list[str]) -> None:
    """Arbitrary dot-joined base64url triples never make verify raise anything but InvalidToken."""
    for ring in _RINGS.values():
        tokens = AccessTokens(ring, issuer=ISS, audience=AUD, clock=_CLOCK)
        _only_invalid_token(tokens.verify, ".".join(parts))


@settings(max_examples=300, deadline=None)
@given(
    alg=st.sampled_from(ALGS),
    extra=st.dictionaries(st.sampled_from(["alg", "typ", "kid", "x"]), _JSON),
    payload=_JSON,
    signature=st.binary(max_size=80),
    real_sig=st.booleans(),
)
def test_fuzz_verify_structured_tokens_raises_only_invalid_token(
    alg: SigningAlg, extra: dict[str, Any], payload: object, signature: bytes, real_sig: bool
) -> None:
    """Headers with a real kid plus random members, random JSON payloads, real or random signatures."""
    ring = _RINGS[alg]
    header = {**good_header(ring.signing_key), **extra}
    signer = real_signer(ring.signing_key) if real_sig else (lambda _: signature)
    token = forge(json.dumps(header).encode(), json.dumps(payload).encode(), signer)
    tokens = AccessTokens(ring, issuer=ISS, audience=AUD, clock=_CLOCK)
    _only_invalid_token(tokens.verify, token)
