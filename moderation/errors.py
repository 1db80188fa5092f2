"""The exception root of the moderation package. Expected outcomes (a malformed body, a spammy
comment, a queue that cannot be written) are values in the guard path; these are for broken
configuration, broken model files and broken infrastructure."""

from __future__ import annotations

from gateway.core.errors import ConfigError, StoreError, TsgateError

__all__ = ["ModelError", "ModerationConfigError", "ModerationError", "PatternError", "ReviewQueueError"]


class ModerationError(TsgateError):
    """Root of every error the moderation package raises on purpose."""


class ModerationConfigError(ModerationError, ConfigError):
    """A moderation setting is invalid; the message names the field."""


class PatternError(ModerationConfigError):
    """A keyword or regex bank pattern cannot be compiled by RE2 (backreferences, lookaround, ...)
    or is too large. Refused at load: the linear-time guarantee is the point of RE2."""


class ModelError(ModerationError):
    """A model file is missing, malformed, of another format version, or fails its content hash."""


class ReviewQueueError(ModerationError, StoreError):
    """The review-record table could not be written after the bounded retries."""
