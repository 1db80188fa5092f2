"""The exception root of the followers package. Detections, labels and review items are values;
these are for broken configuration, unreadable event files and broken infrastructure only."""

from __future__ import annotations

from gateway.core.errors import ConfigError, StoreError, TsgateError

__all__ = ["EventFormatError", "EventLogError", "FollowersConfigError", "FollowersError"]


class FollowersError(TsgateError):
    """Root of every error the followers package raises on purpose."""


class FollowersConfigError(FollowersError, ConfigError):
    """A follower-detection setting is invalid; the message names the field."""


class EventFormatError(FollowersError):
    """A follow-event line or labels file does not follow docs/followers-events.md."""


class EventLogError(FollowersError, StoreError):
    """The follow-event log could not be written or read (e.g. Redis unavailable)."""
