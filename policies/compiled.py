"""A loaded policy compiled for the request path: the route matcher and one Pipeline per rule.

Compiled once per (re)load and swapped in as a whole, so a request sees one policy version from
start to end, and a reload never half-applies."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.context import RequestContext
from gateway.core.decisions import Decision, Deny
from gateway.core.guard import Guard, OnError
from gateway.core.pipeline import Pipeline
from gateway.core.services import GuardServices
from policies.loader import LoadedPolicy
from policies.matcher import RouteMatcher
from policies.model import Match, Rule
from policies.registry import GuardRegistry

__all__ = ["CompiledPolicy", "CompiledRule"]

DEFAULT_RULE_ID = "default"


class _DenyUnmatched:
    """The policy's ``default: deny``: no rule matched, so nothing is allowed."""

    name = "default"
    on_error: OnError = "closed"
    needs_body = False
    _deny = Deny(404, "route.not_allowed", "No route of the policy allows this request.")

    async def check(self, ctx: RequestContext) -> Decision:
        return self._deny


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    mode: str
    pipeline: Pipeline


class CompiledPolicy:
    def __init__(self, loaded: LoadedPolicy, registry: GuardRegistry, services: GuardServices) -> None:
        policy = loaded.policy
        self.loaded = loaded
        self.policy = policy
        active = [rule for rule in policy.routes if rule.mode != "off"]
        self.rules = [
            CompiledRule(rule.id, rule.mode,
                         Pipeline(registry.build(rule, policy, services), rule.mode, registry.resolver,
                                  rollout=rule.rollout, rule_id=rule.id))
            for rule in active
        ]
        self.matcher = RouteMatcher([(rule.match.path, rule.match.methods) for rule in active])
        default_rule = Rule(id=DEFAULT_RULE_ID, match=Match(path="/**"))
        guards: list[Guard] = registry.build(default_rule, policy, services)
        if policy.default == "deny":
            guards.append(_DenyUnmatched())
        self.default = CompiledRule(DEFAULT_RULE_ID, "enforce", Pipeline(guards, resolver=registry.resolver))
        # tsgate's own endpoints (/_tsgate/..., JWKS) are not routed by the policy, but the
        # policy-wide guards (the top-level ip lists) still apply to them.
        internal_rule = Rule(id="internal", match=Match(path="/**"), auth="none")
        self.internal = CompiledRule("internal", "enforce", Pipeline(registry.build(internal_rule, policy, services),
                                                                     resolver=registry.resolver))
        # Headers copied into decision records for replay: the policy's list plus every header a
        # limit key reads (bytes, lower-case, as the request context holds them).
        key_headers = {part.split(":", 1)[1].lower() for _, cfg in policy.limit_names()
                       for part in (cfg.key if isinstance(cfg.key, list) else [cfg.key]) if part.startswith("header:")}
        self.replay_headers = frozenset(h.encode("latin-1") for h in {*policy.log.replay_headers, *key_headers})
        # Rules written for tsgate's own paths (e.g. limits on /_tsgate/auth/login) do apply to them.
        self._own_path_rules = frozenset(
            rule.id for rule in active if rule.match.path.lower().startswith(policy.prefix.lower()))

    @property
    def sha256(self) -> str:
        return self.loaded.sha256

    def internal_route(self, method: str, path: str) -> CompiledRule:
        """The rule for one of tsgate's own endpoints: a rule written for that path, else the
        policy-wide guards only (catch-all rules like '/**' do not reach tsgate's endpoints)."""
        found = self.matcher.match(method, path)
        if found is not None and self.rules[found.index].id in self._own_path_rules:
            return self.rules[found.index]
        return self.internal

    def route(self, method: str, path: str) -> tuple[CompiledRule, dict[str, str]]:
        found = self.matcher.match(method, path)
        if found is None:
            return self.default, {}
        return self.rules[found.index], found.params
