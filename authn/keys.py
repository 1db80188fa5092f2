"""Key rings: asymmetric signing keys for JWS (RFC 7515) and AES keys for the refresh-token JWE
(RFC 7516), with the public half published as a JWK Set (RFC 7517, RFC 8037 for Ed25519).

Rotation follows ``MultiFernet.rotate``: the FIRST active key signs or encrypts, every key in the
ring (active and retired) verifies or decrypts, so tokens issued before a rotation keep working
until they expire. Rings are immutable; ``rotate`` returns a new ring.

Key material is a secret: ``to_json``/``save`` write private keys, ``save`` writes 0600 atomically.
The ``kid`` of a signing key is its RFC 7638 thumbprint, so a kid is always 43 base64url characters
and can never smuggle a path or a query into anything that looks it up (RFC 8725 §3.10)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Final, Generic, Literal, Self, TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from authn.errors import KeyRingError
from gateway.core.clock import Clock, SystemClock

__all__ = [
    "AesKey",
    "AesKeyRing",
    "KeyStatus",
    "PrivateKey",
    "PublicKey",
    "SigningAlg",
    "SigningKey",
    "SigningKeyRing",
    "b64url_decode",
    "b64url_encode",
    "jwks",
]

log = logging.getLogger("tsgate.authn.keys")

SigningAlg = Literal["EdDSA", "ES256"]
KeyStatus = Literal["active", "retired"]
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey

SIGNING_ALGS: Final = ("EdDSA", "ES256")
_STATUSES: Final = ("active", "retired")
_KID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_WEEK: Final = 7 * 86_400.0
_EPHEMERAL = (
    "%s and %s are unset: using an EPHEMERAL %s; tokens will not survive a restart and multiple "
    "gateways will not accept each other's tokens; set %s"
)


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url: alphabet only and canonical, so that one value has exactly one
    spelling (the stdlib decoder silently skips foreign characters and ignores trailing bits).
    Raises ValueError."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def _public_jwk_members(public: PublicKey) -> dict[str, str]:
    """The required members of the public JWK, which are exactly what RFC 7638 hashes."""
    if isinstance(public, Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}
    numbers = public.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }


def _thumbprint(public: PublicKey) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, no whitespace."""
    canonical = json.dumps(_public_jwk_members(public), sort_keys=True, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One asymmetric signing key. ``kid`` must be the RFC 7638 thumbprint of the key."""

    kid: str
    alg: SigningAlg
    private_key: PrivateKey = field(repr=False, compare=False)
    status: KeyStatus
    created: float

    def __post_init__(self) -> None:
        if self.alg not in SIGNING_ALGS:
            raise KeyRingError(f"alg: {self.alg!r} is not allowed (EdDSA, ES256)")
        if self.alg == "EdDSA" and not isinstance(self.private_key, Ed25519PrivateKey):
            raise KeyRingError("pem: alg EdDSA needs an Ed25519 private key")
        if self.alg == "ES256" and not (
            isinstance(self.private_key, ec.EllipticCurvePrivateKey)
            and isinstance(self.private_key.curve, ec.SECP256R1)
        ):
            raise KeyRingError("pem: alg ES256 needs a P-256 private key")
        if self.status not in _STATUSES:
            raise KeyRingError(f"status: {self.status!r} is not allowed (active, retired)")
        created = self.created
        if isinstance(created, bool) or not isinstance(created, int | float) or not math.isfinite(created):
            raise KeyRingError(f"created: {self.created!r} is not a number of seconds since the epoch")
        expected = _thumbprint(self.public_key())
        if self.kid != expected:
            raise KeyRingError(f"kid: {self.kid!r} is not the RFC 7638 thumbprint of the key ({expected!r})")

    @classmethod
    def generate(cls, alg: SigningAlg = "EdDSA", *, created: float, status: KeyStatus = "active") -> SigningKey:
        if alg not in SIGNING_ALGS:
            raise KeyRingError(f"alg: {alg!r} is not allowed (EdDSA, ES256)")
        private: PrivateKey = (
            Ed25519PrivateKey.generate() if alg == "EdDSA" else ec.generate_private_key(ec.SECP256R1())
        )
        return cls(_thumbprint(private.public_key()), alg, private, status, created)

    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The public JWK (RFC 7517 §4; OKP per RFC 8037) with kid, alg and use."""
        return {**_public_jwk_members(self.public_key()), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def to_entry(self) -> dict[str, Any]:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {"kid": self.kid, "alg": self.alg, "status": self.status, "created": self.created, "pem": pem.decode()}

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> SigningKey:
        _only_fields(entry, ("kid", "alg", "status", "created", "pem"), required=("alg", "status", "created", "pem"))
        pem = entry["pem"]
        if not isinstance(pem, str):
            raise KeyRingError("pem: must be a string")
        try:
            private = serialization.load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyRingError("pem: not an unencrypted PKCS8 PEM private key") from None
        if not isinstance(private, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise KeyRingError(f"pem: {type(private).__name__} is not allowed (Ed25519, P-256)")
        if isinstance(private, ec.EllipticCurvePrivateKey) and not isinstance(private.curve, ec.SECP256R1):
            raise KeyRingError(f"pem: curve {private.curve.name} is not allowed; ES256 needs a P-256 private key")
        # A missing kid is derived; a present one must match, so that a hand-edited file cannot
        # give two keys the same kid or a kid that is not the key's.
        kid = entry.get("kid", _thumbprint(private.public_key()))
        return cls(kid, entry["alg"], private, entry["status"], entry["created"])


@dataclass(frozen=True, slots=True)
class AesKey:
    """One AES-256 key for the refresh-token envelope."""

    kid: str
    key: bytes = field(repr=False)
    status: KeyStatus

    def __post_init__(self) -> None:
        if not isinstance(self.kid, str) or not _KID.fullmatch(self.kid):
            raise KeyRingError(f"kid: {self.kid!r} must be 1-64 base64url characters")
        if not isinstance(self.key, bytes) or len(self.key) != 32:
            raise KeyRingError("k: must be exactly 32 bytes (AES-256)")
        if self.status not in _STATUSES:
            raise KeyRingError(f"status: {self.status!r} is not allowed (active, retired)")

    @classmethod
    def generate(cls, status: KeyStatus = "active") -> AesKey:
        return cls(secrets.token_urlsafe(12), secrets.token_bytes(32), status)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> AesKey:
        _only_fields(entry, ("kid", "k", "status"), required=("kid", "k", "status"))
        try:
            key = b64url_decode(entry["k"]) if isinstance(entry["k"], str) else None
        except ValueError:
            key = None
        if key is None:
            raise KeyRingError("k: must be unpadded base64url")
        return cls(entry["kid"], key, entry["status"])


_K = TypeVar("_K", SigningKey, AesKey)


class _KeyRing(Generic[_K]):
    """An immutable ordered ring: the first active key is the one in use, every key is accepted.
    Subclasses name their environment variables and how to parse, serialize and generate a key."""

    __slots__ = ("_by_kid", "_current", "_ephemeral", "_keys")
    _VAR: ClassVar[str]
    _FILE_VAR: ClassVar[str]
    _WHAT: ClassVar[str]

    def __init__(self, keys: Sequence[_K], *, ephemeral: bool = False) -> None:
        self._keys: tuple[_K, ...] = tuple(keys)
        if not self._keys:
            raise KeyRingError("keys: the ring is empty")
        self._by_kid: dict[str, _K] = {}
        for i, key in enumerate(self._keys):
            if key.kid in self._by_kid:
                raise KeyRingError(f"keys[{i}].kid: duplicate {key.kid!r}")
            self._by_kid[key.kid] = key
        active = [key for key in self._keys if key.status == "active"]
        if not active:
            raise KeyRingError("keys: no active key (the first active key signs or encrypts)")
        self._current: _K = active[0]
        self._ephemeral = ephemeral

    @property
    def keys(self) -> tuple[_K, ...]:
        return self._keys

    @property
    def ephemeral(self) -> bool:
        """True when generated at start because no key material was configured."""
        return self._ephemeral

    def get(self, kid: str) -> _K | None:
        """Dictionary lookup only: the kid is never a path, a query or a URL."""
        return self._by_kid.get(kid)

    @staticmethod
    def _parse_entry(entry: Mapping[str, Any]) -> _K:
        raise NotImplementedError

    @staticmethod
    def _to_entry(key: _K) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _fresh(cls) -> Self:
        raise NotImplementedError

    def to_json(self) -> str:
        """The ring WITH ITS SECRET KEYS. Treat the output as a secret."""
        return json.dumps({"keys": [self._to_entry(key) for key in self._keys]}, indent=2)

    @classmethod
    def from_json(cls, text: str, *, source: str = "") -> Self:
        """Parse ``{"keys": [...]}``; every error names the field, e.g. ``keys[1].alg: ...``."""
        prefix = f"{source}: " if source else ""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise KeyRingError(f"{prefix}not JSON ({exc})") from None
        if not isinstance(doc, dict) or set(doc) != {"keys"} or not isinstance(doc["keys"], list):
            raise KeyRingError(f'{prefix}keys: expected {{"keys": [...]}}')
        parsed = []
        for i, entry in enumerate(doc["keys"]):
            if not isinstance(entry, dict):
                raise KeyRingError(f"{prefix}keys[{i}]: expected an object")
            try:
                parsed.append(cls._parse_entry(entry))
            except KeyRingError as exc:
                raise KeyRingError(f"{prefix}keys[{i}].{exc}") from None
        try:
            return cls(parsed)
        except KeyRingError as exc:
            raise KeyRingError(f"{prefix}{exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        return cls.from_json(_read_secret(path), source=str(path))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write 0600, atomically (temp file + os.replace)."""
        _write_secret(path, self.to_json())

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        """The ring from ``<VAR>`` (the JSON) or ``<VAR>_FILE`` (a path). With neither, an
        ephemeral ring (``ring.ephemeral``) and a loud warning: that is fine for a demo, wrong for
        any deployment with restarts or more than one gateway."""
        inline, path = environ.get(cls._VAR, ""), environ.get(cls._FILE_VAR, "")
        if inline and path:
            raise KeyRingError(f"{cls._VAR} and {cls._FILE_VAR} are both set; set one")
        if inline:
            return cls.from_json(inline, source=cls._VAR)
        if path:
            return cls.from_json(_read_secret(path), source=f"{cls._FILE_VAR}={path}")
        log.warning(_EPHEMERAL, cls._VAR, cls._FILE_VAR, cls._WHAT, cls._FILE_VAR)
        return cls(cls._fresh().keys, ephemeral=True)


class SigningKeyRing(_KeyRing[SigningKey]):
    """Signing keys (``TSGATE_SIGNING_KEYS`` / ``TSGATE_SIGNING_KEYS_FILE``): the first active key
    signs, every key verifies."""

    __slots__ = ("_public",)
    _VAR = "TSGATE_SIGNING_KEYS"
    _FILE_VAR = "TSGATE_SIGNING_KEYS_FILE"
    _WHAT = "signing key"

    def __init__(self, keys: Sequence[SigningKey], *, ephemeral: bool = False) -> None:
        super().__init__(keys, ephemeral=ephemeral)
        # Public keys are derived once: verification is the hot path.
        self._public: dict[str, PublicKey] = {key.kid: key.public_key() for key in self._keys}

    @property
    def signing_key(self) -> SigningKey:
        return self._current

    def public_key(self, kid: str) -> PublicKey | None:
        return self._public.get(kid)

    @classmethod
    def generate(cls, alg: SigningAlg = "EdDSA", *, clock: Clock | None = None) -> SigningKeyRing:
        return cls([SigningKey.generate(alg, created=(clock or SystemClock()).now())])

    def rotate(
        self, alg: SigningAlg | None = None, *, keep_retired_seconds: float = _WEEK, clock: Clock | None = None
    ) -> SigningKeyRing:
        """A new ring: a fresh active key first, the previous active keys retired, and retired keys
        dropped once they have been retired longer than ``keep_retired_seconds``.

        The ring stores no retirement time. Rings are ordered newest first (``rotate`` prepends), so
        a key was retired when a key before it was created: that is the age used. Keep retired keys
        at least as long as the longest token lifetime."""
        now = (clock or SystemClock()).now()
        kept = [SigningKey.generate(alg or self._current.alg, created=now)]
        replaced_at = now  # the earliest creation among the keys ahead of the current one
        for key in self._keys:
            if key.status == "active":
                kept.append(replace(key, status="retired"))
            elif now - max(key.created, replaced_at) <= keep_retired_seconds:
                kept.append(key)
            replaced_at = min(replaced_at, key.created)
        return SigningKeyRing(kept, ephemeral=self._ephemeral)

    @staticmethod
    def _parse_entry(entry: Mapping[str, Any]) -> SigningKey:
        return SigningKey.from_entry(entry)

    @staticmethod
    def _to_entry(key: SigningKey) -> dict[str, Any]:
        return key.to_entry()

    @classmethod
    def _fresh(cls) -> SigningKeyRing:
        return cls.generate()


def jwks(ring: SigningKeyRing) -> dict[str, Any]:
    """The JWK Set (RFC 7517 §5) of every key in the ring, public halves only."""
    return {"keys": [key.public_jwk() for key in ring.keys]}


class AesKeyRing(_KeyRing[AesKey]):
    """AES-256 keys (``TSGATE_REFRESH_KEYS`` / ``TSGATE_REFRESH_KEYS_FILE``): the first active key
    encrypts, every key decrypts."""

    __slots__ = ()
    _VAR = "TSGATE_REFRESH_KEYS"
    _FILE_VAR = "TSGATE_REFRESH_KEYS_FILE"
    _WHAT = "refresh-token key"

    @property
    def encrypting_key(self) -> AesKey:
        return self._current

    @classmethod
    def generate(cls) -> AesKeyRing:
        return cls([AesKey.generate()])

    def rotate(self, *, max_retired: int | None = None) -> AesKeyRing:
        """A new ring: a fresh active key first, the previous active keys retired. With
        ``max_retired``, only the newest that many retired keys are kept: refresh tokens sealed
        under a dropped key no longer open (their users sign in again)."""
        retired = [replace(key, status="retired") for key in self._keys]
        if max_retired is not None:
            retired = retired[:max_retired]
        return AesKeyRing([AesKey.generate(), *retired], ephemeral=self._ephemeral)

    @staticmethod
    def _parse_entry(entry: Mapping[str, Any]) -> AesKey:
        return AesKey.from_entry(entry)

    @staticmethod
    def _to_entry(key: AesKey) -> dict[str, Any]:
        return {"kid": key.kid, "k": b64url_encode(key.key), "status": key.status}

    @classmethod
    def _fresh(cls) -> AesKeyRing:
        return cls.generate()


def _only_fields(entry: Mapping[str, Any], allowed: tuple[str, ...], *, required: tuple[str, ...]) -> None:
    for name in entry:
        if name not in allowed:
            raise KeyRingError(f"{name}: unknown field (allowed: {', '.join(allowed)})")
    for name in required:
        if name not in entry:
            raise KeyRingError(f"{name}: missing")


def _read_secret(path: str | os.PathLike[str]) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyRingError(f"{path}: cannot read key file ({exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("key file %s is readable by group or others (mode %o); chmod 600 it", path, mode & 0o777)
    return text


def _write_secret(path: str | os.PathLike[str], text: str) -> None:
    """Write 0600 via a temp file in the same directory and os.replace, so that readers see the
    old ring or the new one, never half a file, and the secret is never world-readable."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
