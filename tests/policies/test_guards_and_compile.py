"""Compiling a policy into pipelines, the IP filter guard, and the guard registry."""

from __future__ import annotations

import pytest

from gateway.core.context import RequestContext
from gateway.core.decisions import ALLOW, Deny
from gateway.core.services import GuardServices
from gateway.core.state import MemoryStore
from policies.compiled import CompiledPolicy
from policies.ipfilter import IpFilterGuard
from policies.loader import load_policy_text
from policies.registry import GuardRegistry, default_registry

HEAD = 'upstream: {url: "http://127.0.0.1:8000"}\n'


def ctx(ip: str, path: str = "/", method: str = "GET") -> RequestContext:
    return RequestContext(decision_id="d", method=method, path=path, query=b"", headers=[], client_ip=ip,
                          scheme="http")


def compile_policy(text: str) -> CompiledPolicy:
    return CompiledPolicy(load_policy_text(HEAD + text), default_registry(), GuardServices(MemoryStore()))


@pytest.mark.parametrize(
    ("ip", "expected"),
    [("10.1.2.3", "ip.denied"), ("192.168.1.5", None), ("203.0.113.9", "ip.not_allowed"),
     ("2001:db8::1", None), ("not-an-ip", "ip.not_allowed"), ("::ffff:10.0.0.1", "ip.denied")],
)
async def test_ip_filter(ip: str, expected: str | None) -> None:
    """Deny wins over allow; with an allow list, anything not on it is refused."""
    guard = IpFilterGuard(allow=["192.168.0.0/16", "10.0.0.0/8", "2001:db8::/32"], deny=["10.0.0.0/8"])
    decision = await guard.check(ctx(ip))
    if expected is None:
        assert decision is ALLOW
    else:
        assert isinstance(decision, Deny) and decision.reason == expected and decision.status == 403


async def test_global_ip_list_applies_to_every_rule_and_default() -> None:
    """A top-level ip list guards every rule and the default (unmatched) route."""
    compiled = compile_policy('ip: {deny: ["198.51.100.0/24"]}\nroutes:\n  - {id: a, match: {path: /a}}\n')
    for path in ("/a", "/unmatched"):
        rule, _ = compiled.route("GET", path)
        outcome = await rule.pipeline.run(ctx("198.51.100.7", path))
        assert isinstance(outcome.decision, Deny), path


async def test_default_deny() -> None:
    """With `default: deny`, a request no rule matches is refused (404 route.not_allowed)."""
    compiled = compile_policy("default: deny\nroutes:\n  - {id: a, match: {path: /a, methods: [GET]}}\n")
    rule, _ = compiled.route("POST", "/a")
    assert rule.id == "default"
    outcome = await rule.pipeline.run(ctx("192.0.2.1", "/a", "POST"))
    assert isinstance(outcome.decision, Deny) and outcome.decision.reason == "route.not_allowed"
    allowed, _ = compiled.route("GET", "/a")
    assert (await allowed.pipeline.run(ctx("192.0.2.1", "/a"))).decision is ALLOW


def test_off_rules_are_skipped_in_matching() -> None:
    """A rule with mode: off is as if absent: the next matching rule applies."""
    compiled = compile_policy(
        "routes:\n  - {id: a, match: {path: /x}, mode: 'off'}\n  - {id: b, match: {path: /x}}\n")
    rule, _ = compiled.route("GET", "/x")
    assert rule.id == "b"


def test_path_params_reach_the_context() -> None:
    """Template parameters are extracted for guards (e.g. the follow target)."""
    compiled = compile_policy("routes:\n  - {id: f, match: {path: '/api/users/{username}/follow'}}\n")
    rule, params = compiled.route("POST", "/api/users/Alice/follow")
    assert rule.id == "f" and params == {"username": "Alice"}


def test_registry_refuses_duplicates_and_orders_by_stage() -> None:
    """Guard names are unique in a registry, and guards are built in stage order."""
    registry = GuardRegistry()
    registry.register("late", 50, lambda rule, policy, services: [])
    registry.register("early", 10, lambda rule, policy, services: [])
    assert registry.names == ["early", "late"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register("early", 20, lambda rule, policy, services: [])


async def test_global_ip_list_guards_internal_endpoints() -> None:
    """tsgate's own endpoints are outside the routes but inside the policy-wide ip lists."""
    compiled = compile_policy('ip: {deny: ["198.51.100.0/24"]}\ndefault: deny\n')
    outcome = await compiled.internal.pipeline.run(ctx("198.51.100.7", "/_tsgate/auth/login", "POST"))
    assert isinstance(outcome.decision, Deny) and outcome.decision.reason == "ip.denied"
    allowed = await compiled.internal.pipeline.run(ctx("192.0.2.1", "/_tsgate/auth/login", "POST"))
    assert allowed.decision is ALLOW  # `default: deny` is about routes, not tsgate's own endpoints
