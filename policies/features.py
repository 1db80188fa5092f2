"""Building feature runtimes from the policy model (policies imports the feature packages; the
features never import the policy model)."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from authn.abuse import LoginLimits
from authn.db import Database
from authn.errors import KeyRingError
from authn.external import ExternalAuthenticator, JwksCache
from authn.keys import AesKeyRing, SigningKeyRing
from authn.runtime import AuthnRuntime, AuthSettings
from captcha.keys import CaptchaKeys
from captcha.metrics import CaptchaMetrics
from captcha.providers import HCAPTCHA_VERIFY_URL, TURNSTILE_VERIFY_URL
from captcha.runtime import CaptchaRuntime, Identify
from captcha.settings import CaptchaSettings, Escalation, Level, ProviderSettings, RouteCaptcha, Trigger
from followers.actions import FollowActions, LabelStore
from followers.config import ActionSettings, DetectionSettings, FollowRoute
from followers.engine import FollowDetection
from followers.errors import FollowersConfigError
from followers.eventlog import EventLog, MemoryEventLog, event_log_from_url
from followers.review import ModerationQueueSink
from gateway.core.clock import Clock
from gateway.core.errors import ConfigError
from gateway.core.state import StateStore
from moderation import banks as bank_compiler
from moderation import config as mc
from moderation.config import ModerationSettings
from moderation.errors import ModerationError
from moderation.model import LinearModel, load_default_model, load_model
from moderation.records import ReviewQueue
from moderation.sinks import ReviewSink
from moderation.urls import DEFAULT_SHORTENERS
from policies.model import (
    AuthConfig,
    CaptchaEscalation,
    FollowersConfig,
    LimitConfig,
    ModerationDefaults,
    Policy,
    Rule,
)
from policies.model import ExternalAuthenticator as ExternalConfig
from ratelimit.limiter import Limiter
from ratelimit.spec import LimitSpec

__all__ = [
    "ClearanceKeyRing",
    "ModerationRuntime",
    "auth_settings",
    "build_authn",
    "build_captcha",
    "build_external",
    "build_limiter",
    "build_moderation",
    "captcha_settings",
    "limit_spec",
    "moderation_settings",
    "share_dev_keys",
]


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


def share_dev_keys(environ: MutableMapping[str, str], *, identity: bool = True) -> list[str]:
    """With no key material configured, generate one ring of each kind *once* and put it in the
    environment, so every worker (and a reload) uses the same keys. Returns loud warnings.
    ``identity=False`` (a policy without ``auth:``) shares only the CAPTCHA clearance ring, which
    every policy may need (any limit can challenge)."""
    warnings = []
    if identity and not environ.get("TSGATE_SIGNING_KEYS") and not environ.get("TSGATE_SIGNING_KEYS_FILE"):
        environ["TSGATE_SIGNING_KEYS"] = SigningKeyRing.generate().to_json()
        warnings.append("no TSGATE_SIGNING_KEYS(_FILE): generated a throw-away signing key; tokens will not "
                        "survive a restart (create one with `tsgate keys generate --out FILE`)")
    if identity and not environ.get("TSGATE_REFRESH_KEYS") and not environ.get("TSGATE_REFRESH_KEYS_FILE"):
        environ["TSGATE_REFRESH_KEYS"] = AesKeyRing.generate().to_json()
        warnings.append("no TSGATE_REFRESH_KEYS(_FILE): generated a throw-away refresh-token key; sessions will "
                        "not survive a restart (create one with `tsgate keys generate --refresh --out FILE`)")
    if not environ.get(ClearanceKeyRing._VAR) and not environ.get(ClearanceKeyRing._FILE_VAR):
        environ[ClearanceKeyRing._VAR] = ClearanceKeyRing.generate().to_json()
        warnings.append("no TSGATE_CLEARANCE_KEYS(_FILE): generated a throw-away CAPTCHA key; clearances will "
                        "not survive a restart (create one with `tsgate keys generate --refresh --out FILE`)")
    return warnings


class ClearanceKeyRing(AesKeyRing):
    """CAPTCHA secrets (``TSGATE_CLEARANCE_KEYS`` / ``_FILE``), the same format as the refresh-token
    ring but a separate ring: a leaked clearance key must not open sessions, or the reverse."""

    __slots__ = ()
    _VAR = "TSGATE_CLEARANCE_KEYS"
    _FILE_VAR = "TSGATE_CLEARANCE_KEYS_FILE"
    _WHAT = "CAPTCHA clearance key"


def _escalation(cfg: CaptchaEscalation) -> Escalation:
    return Escalation(cfg.strikes, cfg.window, cfg.then, cfg.queue)


def captcha_settings(policy: Policy, environ: Mapping[str, str]) -> CaptchaSettings:
    """The policy's ``captcha:`` section and every rule's ``captcha:`` as plain settings."""
    cfg = policy.captcha
    escalate = _escalation(cfg.escalate)
    routes: dict[str, RouteCaptcha] = {}
    scopes = {"default", "internal"}
    for rule in policy.routes:
        scopes.add(rule.id)
        rc = rule.captcha
        if rc is None or rule.mode == "off":
            continue
        trigger: Trigger = ("always" if rc.always else "after_failures" if rc.after_failures is not None
                   else "on_limit" if rc.on_limit is not None else "risk_at_least")
        scope = rc.scope or rule.id
        scopes.add(scope)
        routes[rule.id] = RouteCaptcha(
            scope=scope, trigger=trigger, level=rc.level or cfg.default_level, after_failures=rc.after_failures or 0,
            failure_statuses=frozenset(rc.failure_statuses), failure_window=rc.failure_window,
            on_limit=rc.on_limit or "", risk_at_least=rc.risk_at_least or "high",
            clearance_ttl=rc.clearance_ttl or cfg.clearance_ttl,
            uses=rc.uses if rc.uses is not None else cfg.clearance_uses,
            escalate=_escalation(rc.escalate) if rc.escalate is not None else escalate)
    providers = []
    for index, provider in enumerate(cfg.providers):
        secret = environ.get(provider.secret_env, "")
        if not secret:
            raise ConfigError(f"captcha.providers[{index}].secret_env: ${provider.secret_env} is not set")
        default_url = TURNSTILE_VERIFY_URL if provider.kind == "turnstile" else HCAPTCHA_VERIFY_URL
        providers.append(ProviderSettings(provider.kind, provider.site_key, secret, provider.verify_url or default_url,
                                          provider.timeout, provider.level, provider.hostname))
    return CaptchaSettings(
        prefix=policy.prefix, algorithm=cfg.algorithm, levels=tuple(Level(lv.cost, lv.counter) for lv in cfg.levels),
        default_level=cfg.default_level, challenge_ttl=cfg.challenge_ttl, clearance_ttl=cfg.clearance_ttl,
        clearance_uses=cfg.clearance_uses, cookie_name=cfg.cookie.name, cookie_secure=cfg.cookie.secure,
        cookie_same_site=cfg.cookie.same_site, escalate=escalate, issue_per_minute=cfg.issue_per_minute,
        verify_per_minute=cfg.verify_per_minute, providers=tuple(providers), routes=routes,
        scopes=frozenset(scopes))


def build_captcha(policy: Policy, store: StateStore, clock: Clock, *, metrics: CaptchaMetrics | None = None,
                  identify: Identify | None = None, environ: Mapping[str, str] | None = None,
                  keys: CaptchaKeys | None = None) -> CaptchaRuntime:
    """The CAPTCHA runtime. Keys come from ``TSGATE_CLEARANCE_KEYS(_FILE)`` (re-read on reload, so
    `tsgate keys rotate --file` + reload rotates them); without either variable, ``keys`` (the
    running ring, on reload) or else an ephemeral ring with a loud warning."""
    env = os.environ if environ is None else environ
    if keys is None or env.get(ClearanceKeyRing._VAR) or env.get(ClearanceKeyRing._FILE_VAR):
        try:
            ring = ClearanceKeyRing.from_env(env)
        except KeyRingError as exc:
            raise ConfigError(f"TSGATE_CLEARANCE_KEYS: {exc}") from exc
        keys = CaptchaKeys([(key.kid, key.key) for key in ring.keys if key.status == "active"]
                           + [(key.kid, key.key) for key in ring.keys if key.status != "active"])
    return CaptchaRuntime(captcha_settings(policy, env), keys, store, clock, metrics=metrics, identify=identify)


def moderation_settings(defaults: ModerationDefaults, rule: Rule, *, check_patterns: bool = False
                        ) -> ModerationSettings:
    """One route's ``ModerationSettings``: the policy-wide defaults with the route's overrides.
    A rule in ``mode: shadow`` gets a shadow guard (scores and reports, never enqueues)."""

    route = rule.moderation
    if route is None:
        raise ValueError(f"rule {rule.id!r} has no moderation section")
    thresholds = route.thresholds or defaults.thresholds
    if check_patterns:  # compile once at load so RE2's refusals name the bank
        for kb in defaults.keyword_banks:
            bank_compiler.compile_keyword_bank(kb.name, kb.keywords)
        for rb in defaults.regex_banks:
            bank_compiler.compile_regex_bank(rb.name, rb.patterns, case_sensitive=rb.case_sensitive)
    near = defaults.near_duplicates
    return mc.ModerationSettings(
        content=mc.ContentFields(tuple(route.content)),
        thresholds=mc.Thresholds(thresholds.flag, thresholds.hold, thresholds.challenge, thresholds.block),
        symbols={name: mc.SymbolSettings(sym.weight, sym.shadow) for name, sym in defaults.symbols.items()},
        mode="shadow" if rule.mode == "shadow" else "enforce",
        on_body_error=route.on_body_error or defaults.on_body_error,
        keyword_banks=tuple(mc.KeywordBankSpec(b.name, tuple(b.keywords), b.weight, b.max_hits, b.shadow)
                            for b in defaults.keyword_banks),
        regex_banks=tuple(mc.RegexBankSpec(b.name, tuple(b.patterns), b.weight, b.max_hits, b.view, b.case_sensitive,
                                           b.shadow) for b in defaults.regex_banks),
        urls=mc.UrlSettings(free_urls=defaults.urls.free_urls,
                            shorteners=DEFAULT_SHORTENERS | {d.lower() for d in defaults.urls.extra_shorteners},
                            blocked_domains=frozenset(d.lower() for d in defaults.urls.blocked_domains),
                            allowed_domains=frozenset(d.lower() for d in defaults.urls.allowed_domains)),
        max_mentions=defaults.max_mentions, max_hashtags=defaults.max_hashtags,
        near_duplicates=mc.NearDupSettings(enabled=near.enabled, window=near.window, min_accounts=near.min_accounts),
        challenge_level=defaults.challenge_level,
        queue="moderation",
    )


@dataclass(frozen=True, slots=True)
class ModerationRuntime:
    """What the moderation guards of one policy version share: the model, the review queue and
    each moderated rule's settings."""

    model: LinearModel
    model_source: str
    queue: ReviewSink  # ReviewQueue in the gateway; an in-memory sink in the policy sandbox
    settings: Mapping[str, ModerationSettings]


def build_moderation(policy: Policy, database: Database | None, *, previous: ModerationRuntime | None = None,
                     sink: ReviewSink | None = None) -> ModerationRuntime | None:
    """The moderation runtime for a policy with moderated routes (None without any). The model is
    loaded once and kept across reloads unless ``moderation.model`` names another file."""
    settings = {rule.id: moderation_settings(policy.moderation, rule) for rule in policy.routes
                if rule.moderation is not None and rule.mode != "off"}
    if not settings:
        return None
    source = policy.moderation.model
    if previous is not None and previous.model_source == source:
        model = previous.model
    else:
        try:
            model = load_default_model() if source == "default" else load_model(source)
        except (OSError, ValueError, ModerationError) as exc:
            raise ConfigError(f"moderation.model: cannot load {source!r}: {exc}") from exc
    queue = sink if sink is not None or previous is None else previous.queue
    return ModerationRuntime(model, source, _review_sink(queue, database), settings)


def _review_sink(sink: ReviewSink | None, database: Database | None) -> ReviewSink:
    """Where review items go: the given sink (the sandbox's memory), else the database's queue."""
    if sink is not None:
        return sink
    if database is None:
        raise ValueError("a review sink or a database is needed")
    return ReviewQueue(database)


@dataclass(frozen=True, slots=True)
class FollowersRuntime:
    """One process's fake-follower detection: the detectors' state and the event log live as long
    as the process (kept across reloads); settings and routes come from the current policy."""

    engine: FollowDetection
    log: EventLog
    actions: FollowActions
    labels: LabelStore
    settings: ActionSettings
    routes: Mapping[str, FollowRoute]
    config: FollowersConfig
    # In-process log (memory://): the guard feeds the detectors itself. A Redis Stream: every
    # worker's detectors read the whole shared stream (EventLogConsumer), so each sees every
    # worker's follows; duplicate findings are idempotent (labels, review ids).
    inline: bool = True


def build_followers(policy: Policy, store: StateStore, database: Database | None, *,
                    previous: FollowersRuntime | None = None, sink: ReviewSink | None = None
                    ) -> FollowersRuntime | None:
    """The runtime for a policy with follow routes (None without any)."""
    routes = {rule.id: FollowRoute(rule.follow.target, rule.follow.action) for rule in policy.routes
              if rule.follow is not None and rule.mode != "off"}
    if not routes:
        return None
    cfg = policy.followers
    try:
        settings = ActionSettings(mode=cfg.mode, label=cfg.label, on_label=cfg.on_label, challenge_at=cfg.challenge_at,
                                  deny_at=cfg.deny_at, challenge_level=cfg.challenge_level,
                                  review_targets=cfg.review_targets, review_cohorts=cfg.review_cohorts)
    except FollowersConfigError as exc:
        raise ConfigError(f"followers: {exc}") from exc
    engine = previous.engine if previous is not None else FollowDetection(DetectionSettings(label_ttl_s=cfg.label_ttl))
    log = previous.log if previous is not None else event_log_from_url(policy.state, max_len=cfg.event_log_max)
    if previous is not None and previous.config == cfg:
        actions, labels = previous.actions, previous.labels  # keeps cohorts waiting to settle
    else:
        labels = LabelStore(store, cfg.label)
        actions = FollowActions(labels, ModerationQueueSink(_review_sink(sink, database)), label_ttl_s=cfg.label_ttl,
                                shadow=cfg.mode == "shadow", review_targets=cfg.review_targets,
                                review_cohorts=cfg.review_cohorts)
    return FollowersRuntime(engine, log, actions, labels, settings, routes, cfg,
                            inline=isinstance(log, MemoryEventLog))


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
