"""authn's exception root. Expected outcomes are values; these are for the few places where an
exception is the contract (one InvalidToken for every token verification failure)."""

from __future__ import annotations

from gateway.core.errors import TsgateError

__all__ = ["AccountExistsError", "AuthnError", "HasherBusyError", "InvalidToken", "KeyRingError"]


class AuthnError(TsgateError):
    """Root of authn's errors."""


class InvalidToken(AuthnError):
    """A token failed verification. Deliberately one type with no detail for the client: the
    reason (expired, bad signature, wrong audience, ...) is logged, never returned."""


class KeyRingError(AuthnError):
    """Key material is missing or malformed (a configuration error, named by field)."""


class AccountExistsError(AuthnError):
    """The username or email is already taken."""


class HasherBusyError(AuthnError):
    """Too many password hashes are queued; the caller answers 503 with Retry-After."""
