"""The refresh-token envelope: JWE compact serialization (RFC 7516 §3.1) with direct key agreement
(``alg: dir``) and AES-256-GCM (``enc: A256GCM``, RFC 7518 §5.3).

    BASE64URL(UTF8(header)) . "" . BASE64URL(IV) . BASE64URL(ciphertext) . BASE64URL(tag)

with the protected header as the additional authenticated data, so the header (kid, typ) cannot
be swapped without failing the tag. Refresh tokens are opaque to clients (encrypted, not just
signed) because they carry session ids and generations the client has no business reading.

Parsing on ``open`` is strict and happens before any decryption; every failure is one
``InvalidToken`` (RFC 8725 §2.1, §3.1). IVs are random 96-bit values, which is safe for up to
2**32 seals per key (NIST SP 800-38D §8.3); rotate the AES ring long before that."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any, Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authn.errors import InvalidToken
from authn.keys import AesKeyRing, b64url_decode, b64url_encode

__all__ = ["RefreshEnvelope"]

log = logging.getLogger("tsgate.authn.jwe")

MAX_TOKEN_BYTES: Final = 2048
MAX_HEADER_BYTES: Final = 512
TYP: Final = "tsgate-rt"
_HEADER_MEMBERS: Final = frozenset({"alg", "enc", "kid", "typ"})
_IV_BYTES: Final = 12
_TAG_BYTES: Final = 16


class _Refused(Exception):
    """Internal: a named failure, turned into InvalidToken at the boundary."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Refused("duplicate JSON member")
    return obj


class RefreshEnvelope:
    """Seal and open refresh-token payloads with the AES ring: the first active key seals, every
    key opens (so tokens sealed before a rotation still open)."""

    __slots__ = ("_aead", "_ring")

    def __init__(self, ring: AesKeyRing) -> None:
        self._ring = ring
        self._aead = {key.kid: AESGCM(key.key) for key in ring.keys}

    def seal(self, payload: Mapping[str, Any]) -> str:
        """An encrypted compact JWE of ``payload`` (a JSON-serializable mapping)."""
        kid = self._ring.encrypting_key.kid
        header = {"alg": "dir", "enc": "A256GCM", "kid": kid, "typ": TYP}
        protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        plaintext = json.dumps(dict(payload), separators=(",", ":"), allow_nan=False).encode()
        iv = os.urandom(_IV_BYTES)
        sealed = self._aead[kid].encrypt(iv, plaintext, protected.encode("ascii"))
        ciphertext, tag = sealed[:-_TAG_BYTES], sealed[-_TAG_BYTES:]
        token = ".".join((protected, "", b64url_encode(iv), b64url_encode(ciphertext), b64url_encode(tag)))
        if len(token) > MAX_TOKEN_BYTES:
            # Refuse to issue what open() would refuse: a caller bug, not a client error.
            raise ValueError(f"refresh payload too large ({len(token)} > {MAX_TOKEN_BYTES} bytes sealed)")
        return token

    def open(self, token: str) -> dict[str, Any]:
        """The payload of a token this ring sealed; ``InvalidToken`` for every failure."""
        try:
            return self._open(token)
        except Exception as exc:  # the boundary: cryptography, json, base64, ours
            reason = str(exc) if isinstance(exc, _Refused) else f"{type(exc).__name__}: {exc}"
            log.debug("refresh token refused: %s", reason)
            raise InvalidToken("invalid token") from exc

    def _open(self, token: object) -> dict[str, Any]:
        if not isinstance(token, str) or not token.isascii() or len(token) > MAX_TOKEN_BYTES:
            raise _Refused("not an ASCII string of at most 2048 bytes")
        parts = token.split(".")
        if len(parts) != 5:
            raise _Refused("not five parts")
        protected, encrypted_key, iv_b64, ciphertext_b64, tag_b64 = parts
        if encrypted_key:
            raise _Refused("dir has an empty encrypted key")  # RFC 7518 §4.5
        raw_header = b64url_decode(protected)
        if len(raw_header) > MAX_HEADER_BYTES:
            raise _Refused("header too large")
        header = json.loads(raw_header, object_pairs_hook=_no_duplicates)
        if not isinstance(header, dict) or header.keys() != _HEADER_MEMBERS:
            raise _Refused("header members are not exactly alg, enc, kid, typ")
        if header["alg"] != "dir" or header["enc"] != "A256GCM" or header["typ"] != TYP:
            raise _Refused("header is not dir / A256GCM / tsgate-rt")
        kid = header["kid"]
        aead = self._aead.get(kid) if isinstance(kid, str) else None
        if aead is None:
            raise _Refused("unknown kid")
        iv, ciphertext, tag = b64url_decode(iv_b64), b64url_decode(ciphertext_b64), b64url_decode(tag_b64)
        if len(iv) != _IV_BYTES or len(tag) != _TAG_BYTES or not ciphertext:
            raise _Refused("IV must be 12 bytes, tag 16 bytes, ciphertext non-empty")
        # AAD is the header exactly as sent (RFC 7516 §5.2 step 14), not a re-serialization.
        plaintext = aead.decrypt(iv, ciphertext + tag, protected.encode("ascii"))
        payload = json.loads(plaintext, object_pairs_hook=_no_duplicates)
        if not isinstance(payload, dict):
            raise _Refused("payload is not a JSON object")
        return payload
