"""The exception root of tsgate. Expected outcomes (deny, challenge, hold) are values, never
exceptions; these are for broken configuration and broken infrastructure only. Foreign errors
(redis, sqlalchemy, yaml, ...) are translated at the boundary with ``raise ... from exc``."""

from __future__ import annotations

__all__ = ["ConfigError", "StoreError", "StoreFullError", "StoreUnavailableError", "TsgateError"]


class TsgateError(Exception):
    """Root of every error tsgate raises on purpose."""


class ConfigError(TsgateError):
    """Configuration (policy file, environment, CLI) is invalid. The message names the field."""


class StoreError(TsgateError):
    """A state store operation failed (timeout, connection refused, protocol error)."""


class StoreUnavailableError(StoreError):
    """The store could not be reached in time."""


class StoreFullError(StoreError):
    """A bounded in-memory store is full of live keys and refuses to create another.

    It never evicts a live key to make room: eviction would silently hand a blocked client a
    fresh budget. Callers apply their guard's ``on_error`` (open or closed) instead."""
