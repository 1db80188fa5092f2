"""Profile enrichment: pointer lookups, caching, timeouts, safe URL building."""

from __future__ import annotations

import asyncio
import json

import pytest

from followers.config import ProfileSettings
from followers.errors import FollowersConfigError
from followers.profile import ProfileEnricher


async def test_lookup_is_cached_and_the_actor_is_percent_encoded() -> None:
    """One fetch per actor within the TTL; '/' and '?' in an id cannot change the path."""
    calls: list[str] = []

    async def fetch(url: str, timeout: float) -> tuple[int, bytes]:
        calls.append(url)
        return 200, json.dumps({"profile": {"posts": 0, "created": "2025-01-01T00:00:00Z"}}).encode()

    now = [0.0]
    enricher = ProfileEnricher(ProfileSettings("http://b/api/profiles/{actor}", posts_pointer="/profile/posts",
                                               created_pointer="/profile/created", cache_ttl_s=10),
                               fetch=fetch, monotonic=lambda: now[0])
    profile = await enricher.lookup("a/../b?x")
    assert profile is not None and profile.posts == 0 and profile.created == 1_735_689_600.0
    await enricher.lookup("a/../b?x")
    assert calls == ["http://b/api/profiles/a%2F..%2Fb%3Fx"]
    now[0] = 11
    await enricher.lookup("a/../b?x")
    assert len(calls) == 2


async def test_slow_or_failing_backend_gives_none() -> None:
    """A timeout, a non-200 or a non-JSON body is None (enrichment only adds evidence)."""
    async def slow(url: str, timeout: float) -> tuple[int, bytes]:
        await asyncio.sleep(1)
        return 200, b"{}"

    async def broken(url: str, timeout: float) -> tuple[int, bytes]:
        return 500, b"oops"

    settings = ProfileSettings("http://b/{actor}", posts_pointer="/posts", timeout_s=0.05)
    assert await ProfileEnricher(settings, fetch=slow).lookup("a") is None
    assert await ProfileEnricher(settings, fetch=broken).lookup("a") is None


def test_template_is_validated() -> None:
    """The template must be http(s) and contain {actor}."""
    with pytest.raises(FollowersConfigError):
        ProfileSettings("file:///etc/passwd")
