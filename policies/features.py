"""Building feature runtimes from the policy model (policies imports the feature packages; the
features never import the policy model)."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from authn.abuse import LoginLimits
from authn.db import Database
from authn.external import ExternalAuthenticator, JwksCache
from authn.keys import AesKeyRing, SigningKeyRing
from authn.runtime import AuthnRuntime, AuthSettings
from gateway.core.clock import Clock
from gateway.core.errors import ConfigError
from gateway.core.state import StateStore
from policies.model import AuthConfig, LimitConfig, Policy
from policies.model import ExternalAuthenticator as ExternalConfig
from ratelimit.limiter import Limiter
from ratelimit.spec import LimitSpec

__all__ = ["auth_settings", "build_authn", "build_external", "build_limiter", "limit_spec", "share_dev_keys"]


def auth_settings(cfg: AuthConfig) -> AuthSettings:
    login = cfg.login
    return AuthSettings(
        issuer=cfg.issuer, audience=cfg.audience, access_ttl=cfg.access_ttl, refresh_ttl=cfg.refresh_ttl,
        refresh_grace=cfg.refresh_grace, upstream_audience=cfg.upstream_audience, assertion=cfg.assertion,
        revocation_fail=cfg.revocation_fail, registration=cfg.registration,
        cookie_enabled=cfg.refresh_cookie.enabled, cookie_name=cfg.refresh_cookie.name,
        cookie_secure=cfg.refresh_cookie.secure, cookie_same_site=cfg.refresh_cookie.same_site,
        password_profile=cfg.password.profile, password_min_length=cfg.password.min_length,
        password_max_length=cfg.password.max_length, hash_concurrency=cfg.password.max_concurrency,
        hash_queue=cfg.password.max_queue,
        login=LoginLimits(login.challenge_after, login.lock_after, login.lock_for, login.per_ip_failures,
                          login.stuffing_distinct_logins),
    )


def build_external(index: int, cfg: ExternalConfig, environ: Mapping[str, str]) -> ExternalAuthenticator:
    where = f"auth.external[{index}]"
    key: Any = None
    jwks = None
    if cfg.secret_env:
        secret = environ.get(cfg.secret_env)
        if not secret or len(secret) < 32:
            raise ConfigError(f"{where}.secret_env: ${cfg.secret_env} must hold a secret of at least 32 characters")
        key = secret.encode("utf-8")
    elif cfg.public_key_file:
        try:
            key = Path(cfg.public_key_file).read_text(encoding="ascii")
        except OSError as exc:
            raise ConfigError(f"{where}.public_key_file: cannot read {cfg.public_key_file}: {exc.strerror}") from exc
    elif cfg.jwks_url:
        jwks = JwksCache(cfg.jwks_url)
    return ExternalAuthenticator(
        name=cfg.name, header=cfg.header, scheme=cfg.scheme, algorithms=cfg.algorithms, key=key, jwks=jwks,
        issuer=cfg.issuer, audience=cfg.audience, subject_claim=cfg.subject_claim, roles_claim=cfg.roles_claim,
        leeway=cfg.leeway,
    )


def load_key_rings(environ: Mapping[str, str]) -> tuple[SigningKeyRing, AesKeyRing]:
    return SigningKeyRing.from_env(environ), AesKeyRing.from_env(environ)


def build_authn(policy: Policy, store: StateStore, clock: Clock, *, database: Database | None = None,
                environ: Mapping[str, str] | None = None, previous: AuthnRuntime | None = None,
                ) -> AuthnRuntime | None:
    """The identity runtime for a policy with an ``auth:`` section, or None without one."""
    cfg = policy.auth
    if cfg is None:
        return None
    env = os.environ if environ is None else environ
    signing, refresh = load_key_rings(env)
    externals = [build_external(i, ext, env) for i, ext in enumerate(cfg.external)]
    settings = auth_settings(cfg)
    keep_hasher = previous is not None and (
        previous.settings.password_profile, previous.settings.hash_concurrency, previous.settings.hash_queue,
    ) == (settings.password_profile, settings.hash_concurrency, settings.hash_queue)
    return AuthnRuntime(settings, database=database or Database(policy.database), store=store, clock=clock,
                        signing=signing, refresh_keys=refresh, externals=externals,
                        hasher=previous.hasher if keep_hasher and previous is not None else None)


def share_dev_keys(environ: MutableMapping[str, str]) -> list[str]:
    """With no key material configured, generate one ring of each kind *once* and put it in the
    environment, so every worker (and a reload) uses the same keys. Returns loud warnings."""
    warnings = []
    if not environ.get("TSGATE_SIGNING_KEYS") and not environ.get("TSGATE_SIGNING_KEYS_FILE"):
        environ["TSGATE_SIGNING_KEYS"] = SigningKeyRing.generate().to_json()
        warnings.append("no TSGATE_SIGNING_KEYS(_FILE): generated a throw-away signing key; tokens will not "
                        "survive a restart (create one with `tsgate keys generate --out FILE`)")
    if not environ.get("TSGATE_REFRESH_KEYS") and not environ.get("TSGATE_REFRESH_KEYS_FILE"):
        environ["TSGATE_REFRESH_KEYS"] = AesKeyRing.generate().to_json()
        warnings.append("no TSGATE_REFRESH_KEYS(_FILE): generated a throw-away refresh-token key; sessions will "
                        "not survive a restart (create one with `tsgate keys generate --refresh --out FILE`)")
    return warnings


def limit_spec(name: str, cfg: LimitConfig) -> LimitSpec:
    keys = cfg.key if isinstance(cfg.key, list) else [cfg.key]
    return LimitSpec.build(name, cfg.rate, key=keys, strategy=cfg.strategy, cost=cfg.cost,
                           exempt_roles=cfg.exempt.roles, exempt_cidrs=cfg.exempt.cidrs,
                           on_exceed=cfg.on_exceed, fail=cfg.fail, count_on=cfg.count_on)


def limits_storage(state_url: str) -> tuple[str, str]:
    """Our state URL → (limits' storage URL, key prefix). Our ``?prefix=`` becomes limits'
    key_prefix (with an ``rl`` suffix) so rate-limit keys stay inside this gateway's namespace."""
    parts = urlsplit(state_url)
    query = dict(parse_qsl(parts.query))
    prefix = query.pop("prefix", "tsgate:")
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    if parts.scheme == "memory":
        base = "memory://"
    return base, prefix.rstrip(":") + ":rl"


def build_limiter(policy: Policy) -> Limiter:
    url, prefix = limits_storage(policy.state)
    settings = policy.ratelimit
    return Limiter(url, timeout=settings.timeout, breaker_cooldown=settings.breaker_cooldown,
                   max_memory_keys=settings.max_memory_keys, key_prefix=prefix)
