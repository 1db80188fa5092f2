"""Clearance tokens: proof that a principal solved a challenge for a scope, recently.

A clearance is sealed with AES-256-GCM (``cryptography``'s AEAD, a random 96-bit nonce per
token, the version and key id bound as associated data), so it is both secret (the holder
cannot read which binding or budget it carries) and authenticated (any change, truncation or
splice fails to open). It is bound to

- the principal: ``u:<user id>`` for a signed-in user, else a hash of the client IP (IPv6 by
  /64) and User-Agent, so a token copied to another client or account is worthless;
- the scope: a rule id or a route group, so a clearance for a cheap route does not open an
  expensive one;
- an expiry and an optional use budget (counted in the shared store by token id).

Every failure to open is the same ``None`` (one error for every verification failure)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from captcha.keys import CaptchaKeys
from gateway.core.context import Principal

__all__ = ["MAX_TOKEN_CHARS", "Clearance", "ClearanceSealer", "principal_binding"]

VERSION = "c1"
MAX_TOKEN_CHARS = 1024
_TOKEN = re.compile(r"c1\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{40,900})")
_NONCE = 12


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Canonical unpadded base64url only: one token has exactly one spelling (the decoder would
    otherwise ignore trailing bits, and two strings would open to the same clearance)."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


def principal_binding(principal: Principal | None, client_ip: str, user_agent: bytes | None) -> str:
    """What a clearance is bound to: the user id when signed in, else IP (IPv6 by /64, so
    privacy addresses rotating inside one network keep their clearance) + User-Agent."""
    if principal is not None and principal.authenticated:
        return "u:" + principal.id
    try:
        addr = ipaddress.ip_address(client_ip)
        network = str(ipaddress.ip_network(f"{addr}/64", strict=False)) if addr.version == 6 else str(addr)
    except ValueError:
        network = client_ip
    digest = hashlib.sha256(network.encode() + b"\x00" + (user_agent or b"")[:512]).digest()
    return "a:" + _b64(digest[:18])


@dataclass(frozen=True, slots=True)
class Clearance:
    id: str
    binding: str
    scope: str
    level: int
    issued_at: int
    expires_at: int
    uses: int = 0  # 0: unlimited until expiry

    def to_claims(self) -> dict[str, Any]:
        return {"id": self.id, "b": self.binding, "s": self.scope, "l": self.level, "iat": self.issued_at,
                "exp": self.expires_at, "u": self.uses}

    @classmethod
    def from_claims(cls, claims: Any) -> Clearance | None:
        if not isinstance(claims, dict) or set(claims) != {"id", "b", "s", "l", "iat", "exp", "u"}:
            return None
        text = ("id", "b", "s")
        ints = ("l", "iat", "exp", "u")
        if not all(isinstance(claims[k], str) for k in text):
            return None
        if not all(type(claims[k]) is int for k in ints):
            return None
        return cls(claims["id"], claims["b"], claims["s"], claims["l"], claims["iat"], claims["exp"], claims["u"])


class ClearanceSealer:
    """``seal`` with the current key; ``open`` with whichever ring key the token names."""

    def __init__(self, keys: CaptchaKeys) -> None:
        self.keys = keys

    @staticmethod
    def new_id() -> str:
        return _b64(os.urandom(12))

    def seal(self, clearance: Clearance) -> str:
        key = self.keys.current
        nonce = os.urandom(_NONCE)
        plaintext = json.dumps(clearance.to_claims(), separators=(",", ":")).encode()
        sealed = AESGCM(key.seal).encrypt(nonce, plaintext, f"{VERSION}.{key.kid}".encode())
        return f"{VERSION}.{key.kid}.{_b64(nonce + sealed)}"

    def open(self, token: str) -> Clearance | None:
        """The clearance, or None for anything that is not a token we sealed, unmodified."""
        if len(token) > MAX_TOKEN_CHARS:
            return None
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        key = self.keys.get(match.group(1))
        if key is None:
            return None
        try:
            blob = _unb64(match.group(2))
            plaintext = AESGCM(key.seal).decrypt(blob[:_NONCE], blob[_NONCE:], f"{VERSION}.{key.kid}".encode())
            return Clearance.from_claims(json.loads(plaintext))
        except (InvalidTag, ValueError, binascii.Error):
            return None
