"""Optional enrichment from the backend's profile endpoint: post count and creation time.

Off the request path (the guard calls it from its after-response hook), cached (bounded LRU with
a TTL, failures cached briefly too so a slow backend is not hammered), with a bounded timeout and
bounded concurrency. A failed lookup is ``None``: enrichment only ever adds evidence.

The URL template's ``{actor}`` is percent-encoded (no '/', '?', '#' can be injected into the
path); the template itself comes from the operator's policy, never from a request."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from followers.config import ProfileSettings

__all__ = ["Profile", "ProfileEnricher", "resolve_pointer"]

Fetch = Callable[[str, float], Awaitable[tuple[int, bytes]]]
_MAX_BODY = 256 * 1024
_NEGATIVE_TTL = 60.0


@dataclass(frozen=True, slots=True)
class Profile:
    posts: int | None
    created: float | None


def resolve_pointer(doc: Any, pointer: str) -> Any:
    """RFC 6901 JSON pointer lookup; None when a step is missing."""
    if pointer == "":
        return doc
    node = doc
    for raw in pointer.split("/")[1:]:
        step = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if step not in node:
                return None
            node = node[step]
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
    return node


async def _urllib_fetch(url: str, timeout: float) -> tuple[int, bytes]:
    def get() -> tuple[int, bytes]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - operator URL
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return int(response.status), response.read(_MAX_BODY)
        except urllib.error.HTTPError as exc:
            return int(exc.code), b""

    return await asyncio.to_thread(get)


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


class ProfileEnricher:
    def __init__(self, settings: ProfileSettings, *, fetch: Fetch | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._fetch = fetch or _urllib_fetch
        self._monotonic = monotonic
        self._cache: OrderedDict[str, tuple[float, Profile | None]] = OrderedDict()
        self._gate = asyncio.Semaphore(settings.concurrency)
        self.counters = {"hits": 0, "lookups": 0, "failures": 0}

    async def lookup(self, actor: str) -> Profile | None:
        now = self._monotonic()
        cached = self._cache.get(actor)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(actor)
            self.counters["hits"] += 1
            return cached[1]
        self.counters["lookups"] += 1
        profile = await self._lookup(actor)
        ttl = self.settings.cache_ttl_s if profile is not None else min(_NEGATIVE_TTL, self.settings.cache_ttl_s)
        self._cache[actor] = (now + ttl, profile)
        self._cache.move_to_end(actor)
        while len(self._cache) > self.settings.cache_size:
            self._cache.popitem(last=False)
        return profile

    async def _lookup(self, actor: str) -> Profile | None:
        s = self.settings
        url = s.url_template.replace("{actor}", quote(actor, safe=""))
        try:
            async with self._gate:
                status, body = await asyncio.wait_for(self._fetch(url, s.timeout_s), s.timeout_s)
            if status != 200:
                raise ValueError(f"status {status}")
            doc = json.loads(body)
        except (TimeoutError, OSError, ValueError):
            self.counters["failures"] += 1
            return None
        posts = resolve_pointer(doc, s.posts_pointer) if s.posts_pointer else None
        created = resolve_pointer(doc, s.created_pointer) if s.created_pointer else None
        return Profile(posts=posts if isinstance(posts, int) and not isinstance(posts, bool) and posts >= 0 else None,
                       created=_epoch(created))
