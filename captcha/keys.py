"""Key material for CAPTCHA: one ring of 32-byte secrets, the first of which is in use.

Each purpose gets its own subkey (HKDF-SHA256 with a purpose label), so the AES-GCM key that
seals clearances is never the HMAC key that signs ALTCHA challenges: a flaw in one use cannot
be turned against the other. The ring itself is loaded by the policy layer (from
``TSGATE_CLEARANCE_KEYS`` / ``_FILE``); this module only needs ``(kid, secret)`` pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["CaptchaKey", "CaptchaKeys"]

_SEAL = b"tsgate/captcha/clearance-seal/v1"
_CHALLENGE = b"tsgate/captcha/altcha-challenge/v1"
_DERIVED = b"tsgate/captcha/altcha-derived-key/v1"


def _subkey(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


@dataclass(frozen=True, slots=True)
class CaptchaKey:
    kid: str
    seal: bytes = field(repr=False)  # AES-256-GCM key for clearance tokens
    challenge: bytes = field(repr=False)  # HMAC key over ALTCHA challenge parameters
    derived: bytes = field(repr=False)  # HMAC key over the expected derived key (fast verify)

    @classmethod
    def from_secret(cls, kid: str, secret: bytes) -> CaptchaKey:
        if len(secret) < 32:
            raise ValueError(f"key {kid!r}: a CAPTCHA secret needs at least 32 bytes")
        return cls(kid, _subkey(secret, _SEAL), _subkey(secret, _CHALLENGE), _subkey(secret, _DERIVED))


class CaptchaKeys:
    """An immutable ring: ``current`` seals and signs, every key opens and verifies, so tokens
    and challenges made before a rotation stay valid until they expire."""

    __slots__ = ("_by_kid", "current")

    def __init__(self, secrets: Sequence[tuple[str, bytes]]) -> None:
        if not secrets:
            raise ValueError("the CAPTCHA key ring is empty")
        keys = [CaptchaKey.from_secret(kid, secret) for kid, secret in secrets]
        self.current: CaptchaKey = keys[0]
        self._by_kid: dict[str, CaptchaKey] = {}
        for key in keys:
            if key.kid in self._by_kid:
                raise ValueError(f"duplicate CAPTCHA key id {key.kid!r}")
            self._by_kid[key.kid] = key

    def get(self, kid: object) -> CaptchaKey | None:
        """A dictionary lookup only: a kid from a token never selects anything but a ring entry."""
        return self._by_kid.get(kid) if isinstance(kid, str) else None
