"""One follow or unfollow as the gateway saw it, and the JSONL event format (docs/followers-events.md).

The gateway keeps what the backend does not: the network prefix (/24 for IPv4, /48 for IPv6, so
one household or one proxy subnet is one key), a hash of the User-Agent (the raw string is not
needed to compare, and is attacker-sized), the account's creation time and how many challenges
the account has been shown. The full address is never stored in the detector state."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, TextIO

from followers.errors import EventFormatError

__all__ = ["FollowAction", "FollowEvent", "event_from_json", "event_to_json", "network_prefix", "read_events",
           "ua_hash"]

FollowAction = Literal["follow", "unfollow"]
_MAX_ID = 256  # actor and target ids longer than this are refused (they are keys in bounded maps)


@lru_cache(maxsize=65_536)  # bounded: addresses are attacker-chosen
def network_prefix(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of ``ip`` as text; ``"?"`` when it is not an address.

    >>> network_prefix("203.0.113.77"), network_prefix("2001:db8:1:2::9")
    ('203.0.113.0/24', '2001:db8:1::/48')
    """
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return "?"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


@lru_cache(maxsize=16_384)
def ua_hash(user_agent: str) -> str:
    """A short stable hash of a User-Agent string (blake2b, 8 bytes hex); ``""`` for none."""
    if not user_agent:
        return ""
    return hashlib.blake2b(user_agent.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class FollowEvent:
    """A follow or unfollow the upstream accepted.

    ``ts`` and ``actor_created`` are epoch seconds (``actor_created`` None when unknown);
    ``prefix`` is ``network_prefix(ip)``; ``ua`` is ``ua_hash(user_agent)``; ``actor_posts`` is
    the account's post count when a profile lookup or the event file supplied it (None: unknown,
    never read as zero); ``challenges`` counts challenges the account was shown before."""

    ts: float
    actor: str
    target: str
    action: FollowAction = "follow"
    prefix: str = "?"
    ua: str = ""
    actor_created: float | None = None
    actor_posts: int | None = None
    challenges: int = 0

    def as_stream_fields(self) -> dict[str, str]:
        """Flat string fields for a Redis Stream entry (absent values are omitted)."""
        fields = {"ts": repr(self.ts), "a": self.actor, "t": self.target,
                  "x": "u" if self.action == "unfollow" else "f", "p": self.prefix, "ua": self.ua,
                  "c": str(self.challenges)}
        if self.actor_created is not None:
            fields["ac"] = repr(self.actor_created)
        if self.actor_posts is not None:
            fields["ap"] = str(self.actor_posts)
        return fields

    @classmethod
    def from_stream_fields(cls, fields: dict[bytes, bytes] | dict[str, str]) -> FollowEvent:
        """Inverse of ``as_stream_fields``; raises EventFormatError on a malformed entry."""
        f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in fields.items()}
        try:
            created = f.get("ac")
            posts = f.get("ap")
            return cls(ts=float(f["ts"]), actor=f["a"], target=f["t"],
                       action="unfollow" if f.get("x") == "u" else "follow", prefix=f.get("p", "?"), ua=f.get("ua", ""),
                       actor_created=float(created) if created is not None else None,
                       actor_posts=int(posts) if posts is not None else None, challenges=int(f.get("c", "0")))
        except (KeyError, ValueError) as exc:
            raise EventFormatError(f"malformed stream entry: {exc}") from exc


def _epoch(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise EventFormatError(f"{field}: expected epoch seconds or an ISO 8601 time, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise EventFormatError(f"{field}: not a finite number")
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise EventFormatError(f"{field}: {value!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            raise EventFormatError(f"{field}: {value!r} has no time zone")
        return parsed.timestamp()
    raise EventFormatError(f"{field}: expected epoch seconds or an ISO 8601 time, got {type(value).__name__}")


def _ident(value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > _MAX_ID:
        raise EventFormatError(f"{field}: expected a non-empty id of at most {_MAX_ID} characters")
    return value


def event_from_json(obj: Any) -> FollowEvent:
    """One event from a decoded JSONL line (docs/followers-events.md)."""
    if not isinstance(obj, dict):
        raise EventFormatError("an event must be a JSON object")
    action = obj.get("action", "follow")
    if action not in ("follow", "unfollow"):
        raise EventFormatError(f"action: expected follow or unfollow, got {action!r}")
    ts = _epoch(obj.get("ts"), "ts")
    if ts is None:
        raise EventFormatError("ts: required")
    posts = obj.get("actor_posts")
    if posts is not None and (isinstance(posts, bool) or not isinstance(posts, int) or posts < 0):
        raise EventFormatError("actor_posts: expected a non-negative integer")
    challenges = obj.get("challenges", 0)
    if isinstance(challenges, bool) or not isinstance(challenges, int) or challenges < 0:
        raise EventFormatError("challenges: expected a non-negative integer")
    ip = obj.get("ip")
    prefix = obj.get("prefix")
    if isinstance(ip, str):
        prefix = network_prefix(ip)
    elif not isinstance(prefix, str):
        prefix = "?"
    ua = obj.get("ua")
    ua_key = obj.get("ua_hash")
    if isinstance(ua, str):
        ua_key = ua_hash(ua)
    elif not isinstance(ua_key, str):
        ua_key = ""
    return FollowEvent(ts=ts, actor=_ident(obj.get("actor"), "actor"), target=_ident(obj.get("target"), "target"),
                       action=action, prefix=prefix, ua=ua_key, actor_created=_epoch(obj.get("actor_created"),
                                                                                     "actor_created"),
                       actor_posts=posts, challenges=challenges)


def event_to_json(event: FollowEvent, *, ip: str | None = None, user_agent: str | None = None) -> str:
    """One JSONL line. The simulator passes the raw ``ip``/``user_agent`` it generated; events
    recorded by the gateway only have the prefix and the hash and are written with those."""
    obj: dict[str, Any] = {"ts": round(event.ts, 3), "actor": event.actor, "target": event.target,
                           "action": event.action}
    if ip is not None:
        obj["ip"] = ip
    else:
        obj["prefix"] = event.prefix
    if user_agent is not None:
        obj["ua"] = user_agent
    else:
        obj["ua_hash"] = event.ua
    obj["actor_created"] = None if event.actor_created is None else round(event.actor_created, 3)
    if event.actor_posts is not None:
        obj["actor_posts"] = event.actor_posts
    if event.challenges:
        obj["challenges"] = event.challenges
    return json.dumps(obj, separators=(",", ":"))


def read_events(lines: Iterable[str] | TextIO, *, source: str = "events") -> Iterator[FollowEvent]:
    """Parse JSONL events (blank lines skipped); errors name the line number."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield event_from_json(json.loads(line))
        except ValueError as exc:  # json.JSONDecodeError
            raise EventFormatError(f"{source}:{number}: not JSON ({exc.args[0]})") from None
        except EventFormatError as exc:
            raise EventFormatError(f"{source}:{number}: {exc}") from None
