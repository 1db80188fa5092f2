"""State stores behind one interface, chosen by URL: ``memory://`` or ``redis://``."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.core.clock import Clock
from gateway.core.errors import ConfigError
from gateway.core.state.base import StateStore, store_key
from gateway.core.state.memory import MemoryStore
from gateway.core.state.redis import SCHEMES as REDIS_SCHEMES
from gateway.core.state.redis import RedisStore

__all__ = ["MemoryStore", "RedisStore", "StateStore", "store_from_url", "store_key"]

_SUPPORTED = "memory://, redis://, rediss://, unix://, redis+cluster://"


def store_from_url(url: str, *, clock: Clock | None = None) -> StateStore:
    """Build the store a URL names. Constructing does no I/O; the first call connects.

    >>> store_from_url("memory://?max_keys=10").max_keys
    10
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryStore(url, clock=clock)
    if scheme in REDIS_SCHEMES:
        return RedisStore(url, clock=clock)
    raise ConfigError(f"state store URL scheme {scheme!r} is not supported; use one of {_SUPPORTED}")
