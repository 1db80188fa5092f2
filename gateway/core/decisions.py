"""Decisions are values. A guard returns one; the pipeline combines them; the proxy renders them.

`Allow` forwards the request. `Deny`, `Challenge` and `Hold` stop it and become RFC 9457
problem+json responses that always carry the decision id and a stable reason id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ALLOW", "Allow", "Challenge", "Decision", "Deny", "Hold", "Signal"]


@dataclass(frozen=True, slots=True)
class Signal:
    """A named, weighted observation with its evidence (e.g. ``ip.denylisted``, weight 1.0)."""

    name: str
    weight: float = 1.0
    evidence: str = ""


@dataclass(frozen=True, slots=True)
class Allow:
    kind: Literal["allow"] = "allow"


@dataclass(frozen=True, slots=True)
class Deny:
    """Refuse the request. ``reason`` is a stable id (``ip.denied``) clients and docs can rely on."""

    status: int
    reason: str
    detail: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    kind: Literal["deny"] = "deny"


@dataclass(frozen=True, slots=True)
class Challenge:
    """Ask the client to prove it is worth serving (a CAPTCHA level, rendered by the captcha guard)."""

    reason: str
    challenge: str = "pow"
    level: int = 1
    detail: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    kind: Literal["challenge"] = "challenge"


@dataclass(frozen=True, slots=True)
class Hold:
    """Do not forward; keep the request for human review in ``queue``."""

    reason: str
    queue: str = "review"
    detail: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=())
    kind: Literal["hold"] = "hold"


Decision = Allow | Deny | Challenge | Hold

ALLOW = Allow()
