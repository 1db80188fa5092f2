"""Admin bearer token. There is no default: without TSGATE_ADMIN_TOKEN (or _FILE) the admin
endpoints that change or reveal configuration answer 401 and say how to set one."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from gateway.core.errors import ConfigError

__all__ = ["admin_token_from_env", "token_matches"]

MIN_TOKEN_LENGTH = 16


def admin_token_from_env(environ: dict[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    token = env.get("TSGATE_ADMIN_TOKEN") or None
    token_file = env.get("TSGATE_ADMIN_TOKEN_FILE")
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"TSGATE_ADMIN_TOKEN_FILE: cannot read {token_file}: {exc.strerror}") from exc
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"TSGATE_ADMIN_TOKEN: must be at least {MIN_TOKEN_LENGTH} characters")
    return token or None


def token_matches(expected: str | None, authorization: str | None) -> bool:
    if not expected or not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())
