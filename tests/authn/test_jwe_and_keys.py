"""Key rings (load, validate, rotate, publish) and the refresh-token JWE envelope: SECURITY.md
class 4 (tampered or truncated encrypted tokens), interop with joserfc, and hypothesis fuzzing."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwe as jose_jwe
from joserfc.jwk import KeySet, OctKey

from authn.errors import InvalidToken, KeyRingError
from authn.jwe import RefreshEnvelope
from authn.keys import AesKey, AesKeyRing, SigningAlg, SigningKey, SigningKeyRing, b64url_decode, b64url_encode, jwks
from gateway.core.clock import FrozenClock

ALGS: list[SigningAlg] = ["EdDSA", "ES256"]
PAYLOAD = {"sid": "s-1", "gen": 3, "sub": "u1", "exp": 1_700_086_400, "iat": 1_700_000_000, "jti": "r-1"}


def refused(envelope: RefreshEnvelope, token: str) -> None:
    with pytest.raises(InvalidToken) as info:
        envelope.open(token)
    assert str(info.value) == "invalid token"


def pem(key: Any) -> str:
    raw: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return raw.decode()


# --- signing key ring ------------------------------------------------------------------------


def test_kid_is_the_rfc7638_thumbprint_known_answer() -> None:
    """The RFC 8037 §A.3 Ed25519 example key gets the thumbprint printed in the RFC as its kid."""
    private = Ed25519PrivateKey.from_private_bytes(b64url_decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"))
    ring = SigningKeyRing.from_json(
        json.dumps({"keys": [{"alg": "EdDSA", "status": "active", "created": 0, "pem": pem(private)}]})
    )
    assert ring.signing_key.kid == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert ring.signing_key.public_jwk()["x"] == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"


@pytest.mark.parametrize("alg", ALGS)
def test_jwks_is_public_only_and_matches_joserfc_thumbprints(alg: SigningAlg) -> None:
    """The JWKS holds public JWKs only (no d), with kid/alg/use, and joserfc computes the same kids."""
    ring = SigningKeyRing.generate(alg).rotate("ES256" if alg == "EdDSA" else "EdDSA")
    published: Any = jwks(ring)
    assert [jwk["kid"] for jwk in published["keys"]] == [key.kid for key in ring.keys]
    for jwk, key in zip(published["keys"], ring.keys, strict=True):
        assert "d" not in jwk and jwk["use"] == "sig" and jwk["alg"] == key.alg
        expected = {"OKP"} if key.alg == "EdDSA" else {"EC"}
        assert {jwk["kty"]} == expected and jwk["crv"] == ("Ed25519" if key.alg == "EdDSA" else "P-256")
    for imported in KeySet.import_key_set(published).keys:
        assert imported.thumbprint() == imported.kid and not imported.is_private


@pytest.mark.parametrize("alg", ALGS)
def test_signing_ring_json_round_trip(alg: SigningAlg) -> None:
    """to_json/from_json keep order, kids, algs, statuses, created times and the keys themselves."""
    ring = SigningKeyRing.generate(alg).rotate()
    again = SigningKeyRing.from_json(ring.to_json())
    assert again.keys == ring.keys
    assert [k.to_entry()["pem"] for k in again.keys] == [k.to_entry()["pem"] for k in ring.keys]
    assert all(k.to_entry()["pem"].startswith("-----BEGIN PRIVATE KEY-----") for k in ring.keys)  # PKCS8


def _entry(**changes: Any) -> dict[str, Any]:
    key = SigningKey.generate("EdDSA", created=1.0)
    return {**key.to_entry(), **changes}


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"keys": [_entry(), _entry(alg="HS256")]}, "keys[1].alg: 'HS256' is not allowed (EdDSA, ES256)"),
        ({"keys": [_entry(alg="none")]}, "keys[0].alg: 'none' is not allowed"),
        ({"keys": [_entry(alg="ES256")]}, "keys[0].pem: alg ES256 needs a P-256 private key"),
        ({"keys": [_entry(pem="nope")]}, "keys[0].pem: not an unencrypted PKCS8 PEM private key"),
        ({"keys": [_entry(pem=pem(rsa.generate_private_key(65537, 2048)), alg="EdDSA")]}, "keys[0].pem: RSAPrivateKey"),
        ({"keys": [_entry(pem=pem(ec.generate_private_key(ec.SECP384R1())), alg="ES256")]}, "needs a P-256"),
        ({"keys": [_entry(kid="../../etc/passwd")]}, "keys[0].kid: '../../etc/passwd' is not the RFC 7638 thumbprint"),
        ({"keys": [_entry(status="maybe")]}, "keys[0].status: 'maybe' is not allowed"),
        ({"keys": [_entry(created="yesterday")]}, "keys[0].created"),
        ({"keys": [_entry(created=float("nan"))]}, "keys[0].created"),
        ({"keys": [_entry(extra=1)]}, "keys[0].extra: unknown field"),
        ({"keys": [{"alg": "EdDSA", "status": "active", "created": 1}]}, "keys[0].pem: missing"),
        ({"keys": ["pem"]}, "keys[0]: expected an object"),
        ({"keys": []}, "keys: the ring is empty"),
        ({"keys": [_entry(status="retired")]}, "keys: no active key"),
        ({"key": []}, 'keys: expected {"keys": [...]}'),
        ([], 'keys: expected {"keys": [...]}'),
    ],
)
def test_malformed_signing_material_names_the_field(doc: object, message: str) -> None:
    """Bad key material fails at load with a KeyRingError naming the field."""
    with pytest.raises(KeyRingError) as info:
        SigningKeyRing.from_json(json.dumps(doc))
    assert message in str(info.value)


def test_duplicate_kid_and_non_json_are_refused() -> None:
    """The same key twice, or text that is not JSON, fails with the field named."""
    entry = _entry()
    with pytest.raises(KeyRingError, match=r"keys\[1\]\.kid: duplicate"):
        SigningKeyRing.from_json(json.dumps({"keys": [entry, entry]}))
    with pytest.raises(KeyRingError, match="not JSON"):
        SigningKeyRing.from_json("{keys")


def test_rotate_returns_a_new_ring_and_ages_out_retired_keys() -> None:
    """rotate prepends an active key, retires the old one, leaves the original ring alone, and drops
    keys retired longer than keep_retired_seconds."""
    clock = FrozenClock()
    first = SigningKeyRing.generate(clock=clock)
    clock.advance(3600)
    second = first.rotate(clock=clock)
    assert [k.status for k in second.keys] == ["active", "retired"] and second.keys[1].kid == first.signing_key.kid
    assert first.signing_key.status == "active" and len(first.keys) == 1
    clock.advance(86_400)
    third = second.rotate(keep_retired_seconds=2 * 86_400, clock=clock)
    assert [k.kid for k in third.keys[1:]] == [k.kid for k in second.keys]
    clock.advance(86_400 + 1)
    fourth = third.rotate(keep_retired_seconds=2 * 86_400, clock=clock)
    # first was retired 2 days + 1 s ago (when second's key was created): dropped.
    assert [k.kid for k in fourth.keys[1:]] == [k.kid for k in third.keys[:2]]
    assert all(k.status == "retired" for k in fourth.keys[1:])
    assert first.signing_key.kid not in {k.kid for k in fourth.keys}


def test_save_is_0600_atomic_and_loads_back(tmp_path: Path) -> None:
    """save writes a 0600 file via a temp file (none left behind) and load reads the same ring."""
    ring = SigningKeyRing.generate("ES256")
    target = tmp_path / "signing.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    ring.save(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["signing.json"]
    assert SigningKeyRing.load(target).keys == ring.keys


def test_load_warns_about_a_group_readable_key_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A key file readable by group or others is loaded with a warning to chmod 600 it."""
    target = tmp_path / "signing.json"
    target.write_text(SigningKeyRing.generate().to_json())
    os.chmod(target, 0o640)
    with caplog.at_level(logging.WARNING, logger="tsgate.authn.keys"):
        SigningKeyRing.load(target)
    assert "chmod 600" in caplog.text


def test_from_env_inline_file_both_and_missing(tmp_path: Path) -> None:
    """TSGATE_SIGNING_KEYS or _FILE loads; both set is an error; a missing file names the path."""
    ring = SigningKeyRing.generate()
    path = tmp_path / "k.json"
    ring.save(path)
    assert SigningKeyRing.from_env({"TSGATE_SIGNING_KEYS": ring.to_json()}).keys == ring.keys
    loaded = SigningKeyRing.from_env({"TSGATE_SIGNING_KEYS_FILE": str(path)})
    assert loaded.keys == ring.keys and not loaded.ephemeral
    with pytest.raises(KeyRingError, match="both set"):
        SigningKeyRing.from_env({"TSGATE_SIGNING_KEYS": ring.to_json(), "TSGATE_SIGNING_KEYS_FILE": str(path)})
    with pytest.raises(KeyRingError, match=r"nope\.json"):
        SigningKeyRing.from_env({"TSGATE_SIGNING_KEYS_FILE": str(tmp_path / "nope.json")})
    with pytest.raises(KeyRingError, match=r"TSGATE_SIGNING_KEYS: keys\[0\]\.alg"):
        SigningKeyRing.from_env({"TSGATE_SIGNING_KEYS": json.dumps({"keys": [_entry(alg="RS256")]})})


@pytest.mark.parametrize(
    "ring_type, file_var", [(SigningKeyRing, "TSGATE_SIGNING_KEYS_FILE"), (AesKeyRing, "TSGATE_REFRESH_KEYS_FILE")]
)
def test_from_env_without_material_is_ephemeral_and_loud(
    ring_type: Any, file_var: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No key material: an ephemeral ring, flagged, with a warning that says what breaks and what to set."""
    with caplog.at_level(logging.WARNING, logger="tsgate.authn.keys"):
        ring = ring_type.from_env({})
    assert ring.ephemeral
    assert "tokens will not survive a restart and multiple gateways will not accept each other's tokens" in caplog.text
    assert f"set {file_var}" in caplog.text and caplog.records[0].levelno == logging.WARNING


# --- AES key ring -----------------------------------------------------------------------------


def test_aes_ring_json_round_trip_rotate_and_env(tmp_path: Path) -> None:
    """The AES ring round-trips through JSON and files; rotate prepends a key and retires the rest."""
    ring = AesKeyRing.generate()
    assert AesKeyRing.from_json(ring.to_json()).keys == ring.keys
    rotated = ring.rotate()
    assert rotated.encrypting_key.kid != ring.encrypting_key.kid
    assert [k.status for k in rotated.keys] == ["active", "retired"] and rotated.keys[1].key == ring.keys[0].key
    assert len(rotated.rotate().rotate(max_retired=1).keys) == 2
    path = tmp_path / "aes.json"
    rotated.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert AesKeyRing.from_env({"TSGATE_REFRESH_KEYS_FILE": str(path)}).keys == rotated.keys
    assert AesKeyRing.from_env({"TSGATE_REFRESH_KEYS": rotated.to_json()}).keys == rotated.keys


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"kid": "a", "k": b64url_encode(b"x" * 16), "status": "active"}, "keys[0].k: must be exactly 32 bytes"),
        ({"kid": "a", "k": "not base64!", "status": "active"}, "keys[0].k: must be unpadded base64url"),
        ({"kid": "a", "k": 5, "status": "active"}, "keys[0].k: must be unpadded base64url"),
        ({"kid": "../x", "k": b64url_encode(b"x" * 32), "status": "active"}, "keys[0].kid: '../x' must be"),
        ({"kid": "a", "k": b64url_encode(b"x" * 32)}, "keys[0].status: missing"),
        ({"kid": "a", "k": b64url_encode(b"x" * 32), "status": "old"}, "keys[0].status: 'old' is not allowed"),
    ],
)
def test_malformed_aes_material_names_the_field(entry: dict[str, Any], message: str) -> None:
    """Bad AES key material fails at load with a KeyRingError naming the field."""
    with pytest.raises(KeyRingError) as info:
        AesKeyRing.from_json(json.dumps({"keys": [entry]}))
    assert message in str(info.value)


# --- refresh envelope (JWE) -------------------------------------------------------------------


@pytest.fixture
def aes_ring() -> AesKeyRing:
    return AesKeyRing.generate()


@pytest.fixture
def envelope(aes_ring: AesKeyRing) -> RefreshEnvelope:
    return RefreshEnvelope(aes_ring)


def parts(token: str) -> list[str]:
    return token.split(".")


def test_envelope_round_trip_and_format(envelope: RefreshEnvelope, aes_ring: AesKeyRing) -> None:
    """seal/open round-trips; the token is a compact JWE with dir/A256GCM/kid/typ, empty key, 12-byte IV."""
    token = envelope.seal(PAYLOAD)
    assert envelope.open(token) == PAYLOAD
    header, encrypted_key, iv, ciphertext, tag = parts(token)
    assert json.loads(b64url_decode(header)) == {
        "alg": "dir",
        "enc": "A256GCM",
        "kid": aes_ring.encrypting_key.kid,
        "typ": "tsgate-rt",
    }
    assert encrypted_key == "" and len(b64url_decode(iv)) == 12 and len(b64url_decode(tag)) == 16
    assert b"s-1" not in b64url_decode(ciphertext)  # opaque to the client
    assert envelope.seal(PAYLOAD) != token  # fresh IV every time


@pytest.mark.parametrize("index", [0, 2, 3, 4])
def test_tampered_header_iv_ciphertext_or_tag_is_refused(envelope: RefreshEnvelope, index: int) -> None:
    """One flipped bit in the header, IV, ciphertext or tag fails authentication."""
    token = parts(envelope.seal(PAYLOAD))
    if index == 0:
        # Same members, other order: only the AAD (the header exactly as sent) can catch this.
        header = json.loads(b64url_decode(token[0]))
        token[0] = b64url_encode(json.dumps(dict(reversed(list(header.items())))).encode())
    else:
        raw = bytearray(b64url_decode(token[index]))
        raw[len(raw) // 2] ^= 0x01
        token[index] = b64url_encode(bytes(raw))
    refused(envelope, ".".join(token))


def test_truncated_token_is_refused(envelope: RefreshEnvelope) -> None:
    """Every proper prefix of a token fails."""
    token = envelope.seal(PAYLOAD)
    for end in range(len(token)):
        refused(envelope, token[:end])


@pytest.mark.parametrize("count", [1, 3, 4, 6, 7])
def test_wrong_number_of_parts_is_refused(envelope: RefreshEnvelope, count: int) -> None:
    """Anything but five dot-separated parts fails."""
    token = parts(envelope.seal(PAYLOAD))
    token = (token * 2)[:count]
    refused(envelope, ".".join(token))


def test_non_empty_encrypted_key_is_refused(envelope: RefreshEnvelope) -> None:
    """dir has an empty JWE Encrypted Key (RFC 7518 §4.5); anything there fails."""
    token = parts(envelope.seal(PAYLOAD))
    token[1] = b64url_encode(b"\x00" * 40)
    refused(envelope, ".".join(token))


def _with_header(envelope: RefreshEnvelope, aes_ring: AesKeyRing, header: dict[str, Any] | str) -> str:
    """A correctly encrypted token under a ring key with an arbitrary protected header, built by hand
    (a JOSE library would refuse to produce most of these) with the RFC 7516 AAD rule."""
    protected = b64url_encode((header if isinstance(header, str) else json.dumps(header)).encode())
    iv = os.urandom(12)
    sealed = AESGCM(aes_ring.encrypting_key.key).encrypt(iv, json.dumps(PAYLOAD).encode(), protected.encode())
    return ".".join((protected, "", b64url_encode(iv), b64url_encode(sealed[:-16]), b64url_encode(sealed[-16:])))


@pytest.mark.parametrize(
    "changes",
    [
        {"alg": "A256KW"},
        {"alg": "none"},
        {"alg": "RSA-OAEP"},
        {"enc": "A128GCM"},
        {"enc": "A256CBC-HS512"},
        {"typ": "JWT"},
        {"zip": "DEF"},
        {"jku": "https://evil.test/"},
        {"crit": ["exp"]},
        {"kid": 1},
    ],
)
def test_changed_alg_enc_typ_or_extra_header_member_is_refused(
    envelope: RefreshEnvelope, aes_ring: AesKeyRing, changes: dict[str, Any]
) -> None:
    """A header that is not exactly alg dir / enc A256GCM / kid / typ tsgate-rt fails, even if it decrypts."""
    header = {"alg": "dir", "enc": "A256GCM", "kid": aes_ring.encrypting_key.kid, "typ": "tsgate-rt", **changes}
    refused(envelope, _with_header(envelope, aes_ring, header))
    assert (
        envelope.open(
            _with_header(
                envelope,
                aes_ring,
                {"alg": "dir", "enc": "A256GCM", "kid": aes_ring.encrypting_key.kid, "typ": "tsgate-rt"},
            )
        )
        == PAYLOAD
    )


def test_missing_header_member_duplicate_member_and_oversized_header_are_refused(
    envelope: RefreshEnvelope, aes_ring: AesKeyRing
) -> None:
    """A header without typ, with a duplicated alg, or over 512 bytes fails."""
    kid = aes_ring.encrypting_key.kid
    refused(envelope, _with_header(envelope, aes_ring, {"alg": "dir", "enc": "A256GCM", "kid": kid}))
    refused(
        envelope,
        _with_header(
            envelope, aes_ring, f'{{"alg":"A256KW","alg":"dir","enc":"A256GCM","kid":"{kid}","typ":"tsgate-rt"}}'
        ),
    )
    padded = f'{{"alg":"dir",{" " * 512}"enc":"A256GCM","kid":"{kid}","typ":"tsgate-rt"}}'
    refused(envelope, _with_header(envelope, aes_ring, padded))


def test_unknown_kid_is_refused(envelope: RefreshEnvelope) -> None:
    """A token sealed by a ring this envelope does not hold fails, and so does a forged kid."""
    refused(envelope, RefreshEnvelope(AesKeyRing.generate()).seal(PAYLOAD))
    token = parts(envelope.seal(PAYLOAD))
    header = json.loads(b64url_decode(token[0]))
    header["kid"] = "../../etc/passwd"
    token[0] = b64url_encode(json.dumps(header).encode())
    refused(envelope, ".".join(token))


def test_wrong_iv_or_tag_length_and_oversized_token_are_refused(envelope: RefreshEnvelope) -> None:
    """IVs other than 12 bytes, tags other than 16 bytes and tokens over 2048 bytes fail."""
    token = parts(envelope.seal(PAYLOAD))
    for index, raw in ((2, b"\x00" * 16), (2, b"\x00" * 8), (4, b"\x00" * 12), (4, b"\x00" * 32)):
        changed = list(token)
        changed[index] = b64url_encode(raw)
        refused(envelope, ".".join(changed))
    long = list(token)
    long[3] = b64url_encode(os.urandom(1600))
    refused(envelope, ".".join(long))


def test_non_object_payload_is_refused(envelope: RefreshEnvelope, aes_ring: AesKeyRing) -> None:
    """A correctly encrypted payload that is not a JSON object fails."""
    key = OctKey.import_key(aes_ring.encrypting_key.key)
    header = {"alg": "dir", "enc": "A256GCM", "kid": aes_ring.encrypting_key.kid, "typ": "tsgate-rt"}
    for plaintext in (b"[1,2]", b'"s"', b"null", b"not json", b'{"a":1,"a":2}'):
        refused(envelope, jose_jwe.encrypt_compact(header, plaintext, key, algorithms=["dir", "A256GCM"]))


def test_seal_refuses_a_payload_open_would_refuse(envelope: RefreshEnvelope) -> None:
    """Sealing more than fits in 2048 bytes is a caller bug, raised at seal time."""
    with pytest.raises(ValueError, match="too large"):
        envelope.seal({"pad": "x" * 2000})


def test_rotated_ring_opens_old_tokens_and_seals_with_the_new_key(aes_ring: AesKeyRing) -> None:
    """After rotate, old tokens open and new tokens carry the new kid; dropping the old key kills them."""
    old_token = RefreshEnvelope(aes_ring).seal(PAYLOAD)
    rotated = aes_ring.rotate()
    envelope = RefreshEnvelope(rotated)
    assert envelope.open(old_token) == PAYLOAD
    new_token = envelope.seal(PAYLOAD)
    assert json.loads(b64url_decode(new_token.split(".")[0]))["kid"] == rotated.encrypting_key.kid
    assert rotated.encrypting_key.kid != aes_ring.encrypting_key.kid
    refused(RefreshEnvelope(rotated.rotate(max_retired=0)), old_token)


def test_interop_joserfc_decrypts_our_refresh_token(envelope: RefreshEnvelope, aes_ring: AesKeyRing) -> None:
    """A third-party JOSE library decrypts our token with the raw AES key (dir + A256GCM)."""
    token = envelope.seal(PAYLOAD)
    key = OctKey.import_key(aes_ring.encrypting_key.key)
    decrypted = jose_jwe.decrypt_compact(token, key, algorithms=["dir", "A256GCM"])
    assert decrypted.protected == {
        "alg": "dir",
        "enc": "A256GCM",
        "kid": aes_ring.encrypting_key.kid,
        "typ": "tsgate-rt",
    }
    assert json.loads(decrypted.plaintext or b"") == PAYLOAD


def test_interop_we_open_a_joserfc_encrypted_token(envelope: RefreshEnvelope, aes_ring: AesKeyRing) -> None:
    """A dir+A256GCM token encrypted by joserfc with our header fields opens with RefreshEnvelope."""
    key = OctKey.import_key(aes_ring.encrypting_key.key)
    header = {"alg": "dir", "enc": "A256GCM", "kid": aes_ring.encrypting_key.kid, "typ": "tsgate-rt"}
    token = jose_jwe.encrypt_compact(header, json.dumps(PAYLOAD), key, algorithms=["dir", "A256GCM"])
    assert envelope.open(token) == PAYLOAD


def test_aes_key_repr_hides_the_secret() -> None:
    """Key objects never print their secret bytes (logs, tracebacks)."""
    key = AesKey.generate()
    assert repr(key.key) not in repr(key)
    signing = SigningKey.generate("EdDSA", created=0)
    assert "PRIVATE" not in repr(signing)


# --- hypothesis: open raises nothing but InvalidToken, whatever the input ---------------------

_RING = AesKeyRing.generate()
_ENVELOPE = RefreshEnvelope(_RING)
_B64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=120)


def _only_invalid_token(token: str) -> None:
    try:
        _ENVELOPE.open(token)
    except InvalidToken:
        pass


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=600))
def test_fuzz_open_arbitrary_text_raises_only_invalid_token(text: str) -> None:
    """Arbitrary text never makes open raise anything but InvalidToken."""
    _only_invalid_token(text)


@settings(max_examples=300, deadline=None)
@given(token_parts=st.lists(_B64, min_size=5, max_size=5))
def test_fuzz_open_five_base64url_parts_raises_only_invalid_token(token_parts: list[str]) -> None:
    """Arbitrary dot-joined base64url quintuples never make open raise anything but InvalidToken."""
    _only_invalid_token(".".join(token_parts))


@settings(max_examples=300, deadline=None)
@given(iv=st.binary(min_size=12, max_size=12), body=st.binary(max_size=64), tag=st.binary(min_size=16, max_size=16))
def test_fuzz_open_valid_header_random_crypto_raises_only_invalid_token(iv: bytes, body: bytes, tag: bytes) -> None:
    """A valid header with random IV, ciphertext and tag always fails authentication, as InvalidToken."""
    header = {"alg": "dir", "enc": "A256GCM", "kid": _RING.encrypting_key.kid, "typ": "tsgate-rt"}
    token = ".".join(
        (b64url_encode(json.dumps(header).encode()), "", b64url_encode(iv), b64url_encode(body), b64url_encode(tag))
    )
    with pytest.raises(InvalidToken):
        _ENVELOPE.open(token)
