"""The guard registry: route-config section name → guard factory, with a fixed stage order.

Stages follow the request path in DESIGN.md: network lists, ip limits, authn, captcha, user
limits, content and follow moderation. A new defence registers a name; the proxy never changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from authn.guard import AuthnGuard
from authn.runtime import AuthnRuntime
from captcha.guard import CaptchaGuard
from captcha.runtime import CaptchaRuntime
from followers.guard import FollowGuard
from gateway.core.guard import Guard
from gateway.core.pipeline import ChallengeResolver
from gateway.core.services import GuardServices
from moderation.guard import ModerationGuard
from policies.features import FollowersRuntime, ModerationRuntime, limit_spec
from policies.ipfilter import IpFilterGuard
from policies.model import Policy, Rule
from ratelimit.guard import RateLimitGuard
from ratelimit.limiter import Limiter

__all__ = ["GuardFactory", "GuardRegistry", "default_registry"]

GuardFactory = Callable[[Rule, Policy, GuardServices], list[Guard]]


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    stage: int
    factory: GuardFactory


class GuardRegistry:
    """An explicit registry object (no import-time globals); each app or test builds its own."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        # Asked by every pipeline before a Challenge stops a request (a clearance may satisfy it).
        self.resolver: ChallengeResolver | None = None

    def register(self, name: str, stage: int, factory: GuardFactory) -> None:
        if name in self._entries:
            raise ValueError(f"a guard named {name!r} is already registered")
        self._entries[name] = _Entry(name, stage, factory)

    def replace(self, name: str, factory: GuardFactory) -> None:
        """Swap the factory of a registered stage (keeps its order), e.g. `policy explain` puts
        a principal-from-the-command-line guard where authn verifies tokens."""
        entry = self._entries[name]
        self._entries[name] = _Entry(name, entry.stage, factory)

    @property
    def names(self) -> list[str]:
        return [e.name for e in sorted(self._entries.values(), key=lambda e: e.stage)]

    def build(self, rule: Rule, policy: Policy, services: GuardServices) -> list[Guard]:
        """The rule's guards in stage order."""
        guards: list[Guard] = []
        for entry in sorted(self._entries.values(), key=lambda e: e.stage):
            guards.extend(entry.factory(rule, policy, services))
        return guards


def _ip_guards(rule: Rule, policy: Policy, services: GuardServices) -> list[Guard]:
    guards: list[Guard] = []
    for lists in (policy.ip, rule.ip):
        if lists is not None and (lists.allow or lists.deny):
            guards.append(IpFilterGuard(lists.allow, lists.deny))
    return guards


def _authn_guards(runtime: AuthnRuntime | None) -> GuardFactory:
    def build(rule: Rule, policy: Policy, services: GuardServices) -> list[Guard]:
        if runtime is None or rule.auth == "none":
            return []
        return [AuthnGuard(runtime, rule.auth, rule.roles)]

    return build


IDENTITY_KEYS = ("user", "user_or_ip", "claim:")


def _limit_guards(limiter: Limiter | None, *, identity: bool) -> GuardFactory:
    """Limits keyed only by network/route/request data run before authn (stage 20: a flood is
    refused before any token is verified); limits that need the principal run after it (50)."""
    def build(rule: Rule, policy: Policy, services: GuardServices) -> list[Guard]:
        if limiter is None:
            return []
        named = policy.named_limits(rule if rule.id not in ("default", "internal") else None)
        specs = [limit_spec(name, cfg) for name, cfg in named]
        chosen = [s for s in specs if any(p.startswith(IDENTITY_KEYS) for p in s.key) == identity]
        return [RateLimitGuard(chosen, limiter, name="ratelimit-user" if identity else "ratelimit")] if chosen else []

    return build


def _captcha_guards(runtime: CaptchaRuntime | None, *, limits: bool) -> GuardFactory:
    """The rule's own CAPTCHA trigger: at stage 40 (after authn), or at 55 for ``on_limit``, so
    that the named limit has been checked whichever stage it runs at."""
    def build(rule: Rule, policy: Policy, services: GuardServices) -> list[Guard]:
        route = runtime.settings.routes.get(rule.id) if runtime is not None else None
        if route is None or (route.trigger == "on_limit") != limits:
            return []
        return [CaptchaGuard(route, services.store, name="captcha-limit" if limits else "captcha")]

    return build


def _moderation_guards(runtime: ModerationRuntime | None) -> GuardFactory:
    def build(rule: Rule, policy: Policy, services: GuardServices) -> list[Guard]:
        settings = runtime.settings.get(rule.id) if runtime is not None else None
        if runtime is None or settings is None:
            return []
        return [ModerationGuard(settings, services, model=runtime.model, sink=runtime.queue)]

    return build


def _follower_guards(runtime: FollowersRuntime | None) -> GuardFactory:
    def build(rule: Rule, policy: Policy, services: GuardServices) -> list[Guard]:
        route = runtime.routes.get(rule.id) if runtime is not None else None
        if runtime is None or route is None:
            return []
        return [FollowGuard(route, runtime.settings, services, engine=runtime.engine, log=runtime.log,
                            actions=runtime.actions, labels=runtime.labels, inline=runtime.inline)]

    return build


def default_registry(*, authn: AuthnRuntime | None = None, limiter: Limiter | None = None,
                     captcha: CaptchaRuntime | None = None, moderation: ModerationRuntime | None = None,
                     followers: FollowersRuntime | None = None) -> GuardRegistry:
    """The built-in guards by stage: 10 network lists, 20 network-keyed limits, 30 authn,
    40 captcha triggers, 50 identity-keyed limits, 55 captcha on_limit triggers, 60 content
    moderation, 65 follow events and fake-follower labels. The captcha runtime is also the
    registry's Challenge resolver."""
    registry = GuardRegistry()
    registry.register("ip", 10, _ip_guards)
    registry.register("ratelimit", 20, _limit_guards(limiter, identity=False))
    registry.register("authn", 30, _authn_guards(authn))
    registry.register("captcha", 40, _captcha_guards(captcha, limits=False))
    registry.register("ratelimit-user", 50, _limit_guards(limiter, identity=True))
    registry.register("captcha-limit", 55, _captcha_guards(captcha, limits=True))
    registry.register("moderation", 60, _moderation_guards(moderation))
    registry.register("followers", 65, _follower_guards(followers))
    registry.resolver = captcha
    return registry
