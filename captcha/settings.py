"""CAPTCHA settings as plain frozen values. The policy layer maps its model onto these (the
captcha package never imports the policy model), validated once at load, immutable after."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DEFAULT_LEVELS",
    "RISK_BANDS",
    "CaptchaSettings",
    "Escalation",
    "Level",
    "ProviderSettings",
    "RouteCaptcha",
    "Trigger",
]

Trigger = Literal["none", "always", "after_failures", "on_limit", "risk_at_least"]
RISK_BANDS: tuple[str, ...] = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class Level:
    """One difficulty: ``cost`` KDF iterations per attempt times about ``counter`` attempts.

    The server pre-computes the answer at a random counter in [counter/2, counter] (ALTCHA v2
    deterministic mode), so a solver tries on average 0.75 x counter x cost iterations and the
    server pays ``cost`` once per issued challenge and an HMAC per verification."""

    cost: int
    counter: int


# Chosen from bench/captcha_bench.py on a 2-core machine (see docs/performance.md): level 1 is
# unnoticeable, level 2 well under a second in a browser, level 4 a few seconds, 5 is for farms.
DEFAULT_LEVELS: tuple[Level, ...] = (
    Level(1_000, 200),
    Level(2_000, 500),
    Level(5_000, 1_000),
    Level(10_000, 2_500),
    Level(20_000, 5_000),
)


@dataclass(frozen=True, slots=True)
class Escalation:
    """The ladder past the challenge: after ``strikes`` strikes (failed or replayed solutions,
    tampered or foreign clearances, spent clearance budgets) within ``window`` seconds, a
    principal is refused (``deny``) or its requests are held for review (``hold``)."""

    strikes: int = 5
    window: float = 900.0
    then: Literal["deny", "hold"] = "deny"
    queue: str = "captcha"


@dataclass(frozen=True, slots=True)
class RouteCaptcha:
    """A rule's CAPTCHA: what triggers a challenge and what a clearance for it buys.

    ``scope`` names what a clearance is good for (the rule id, or a route group shared by
    several rules). Rules without a ``captcha:`` section get trigger ``none``: their challenges
    come from other guards (a limit with ``on_exceed: challenge``) and use the defaults."""

    scope: str
    trigger: Trigger = "none"
    level: int = 2
    after_failures: int = 0
    failure_statuses: frozenset[int] = frozenset({401, 403})
    failure_window: float = 900.0
    on_limit: str = ""
    risk_at_least: str = "high"
    clearance_ttl: float = 1800.0
    uses: int = 0  # 0: unlimited until the clearance expires
    escalate: Escalation = field(default_factory=Escalation)


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """A third-party CAPTCHA (the next rung after proof of work): its siteverify endpoint and
    the clearance level a solved token is worth."""

    kind: Literal["turnstile", "hcaptcha"]
    site_key: str
    secret: str = field(repr=False)
    verify_url: str
    timeout: float = 3.0
    level: int = 3
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class CaptchaSettings:
    prefix: str = "/_tsgate/"
    algorithm: str = "PBKDF2/SHA-256"
    levels: tuple[Level, ...] = DEFAULT_LEVELS
    default_level: int = 2
    challenge_ttl: float = 300.0
    clearance_ttl: float = 1800.0
    clearance_uses: int = 0
    cookie_name: str = "tsgate_clearance"
    cookie_secure: bool = True
    cookie_same_site: Literal["strict", "lax"] = "lax"
    escalate: Escalation = field(default_factory=Escalation)
    issue_per_minute: int = 60
    verify_per_minute: int = 30
    providers: tuple[ProviderSettings, ...] = ()
    routes: Mapping[str, RouteCaptcha] = field(default_factory=dict)
    # Every scope a challenge may be asked for: rule ids, route groups, "default", "internal".
    scopes: frozenset[str] = frozenset({"default", "internal"})

    @property
    def max_level(self) -> int:
        return len(self.levels)

    def route(self, rule_id: str) -> RouteCaptcha:
        """The rule's CAPTCHA settings; rules without a section get the defaults, scoped to the rule."""
        found = self.routes.get(rule_id)
        if found is not None:
            return found
        return RouteCaptcha(scope=rule_id or "default", level=self.default_level,
                            clearance_ttl=self.clearance_ttl, uses=self.clearance_uses, escalate=self.escalate)

    def scope_route(self, scope: str) -> RouteCaptcha:
        """The settings clearances for ``scope`` are issued with: the first rule whose scope it
        is, else the defaults (a rule without a ``captcha:`` section is its own scope)."""
        for route in self.routes.values():
            if route.scope == scope:
                return route
        return self.route(scope)
