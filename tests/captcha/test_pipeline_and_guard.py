"""A clearance satisfies a Challenge from any guard without skipping later guards; the captcha
guard's triggers (always, risk, failures, on_limit) over a real policy and registry."""

from __future__ import annotations

from captcha.clearance import principal_binding
from captcha.guard import CaptchaGuard
from captcha.runtime import CaptchaRuntime
from captcha.settings import RouteCaptcha
from gateway.core.context import RequestContext
from gateway.core.decisions import ALLOW, Allow, Challenge, Decision, Deny, Signal
from gateway.core.guard import OnError
from gateway.core.pipeline import Pipeline
from gateway.core.state import StateStore
from tests.captcha.conftest import make_ctx, solve


class _Fixed:
    """A guard that always answers the same decision (a stand-in for any real guard's answer)."""

    on_error: OnError = "closed"
    needs_body = False

    def __init__(self, name: str, decision: Decision) -> None:
        self.name, self.decision, self.calls = name, decision, 0

    async def check(self, ctx: RequestContext) -> Decision:
        self.calls += 1
        return self.decision


async def token_for(runtime: CaptchaRuntime, ctx: RequestContext, scope: str, level: int = 1) -> str:
    binding = principal_binding(ctx.principal, ctx.client_ip, ctx.header(b"user-agent"))
    _, reason = await runtime.check_solution(solve(await runtime.issue_challenge(scope, level, binding)), binding)
    assert reason == "ok"
    return runtime.grant(binding, scope, level).token


async def test_cleared_challenge_lets_later_guards_run(runtime: CaptchaRuntime) -> None:
    """A limit's Challenge is resolved by the clearance; the next guard still runs and may deny."""
    limit = _Fixed("ratelimit", Challenge("ratelimit.exceeded", level=1))
    later = _Fixed("authn", Deny(401, "auth.required"))
    token = await token_for(runtime, make_ctx("limited"), "limited")
    ctx = make_ctx("limited", headers=[(b"tsgate-clearance", token.encode())])
    outcome = await Pipeline([limit, later], resolver=runtime).run(ctx)
    assert later.calls == 1 and isinstance(outcome.decision, Deny) and outcome.guard == "authn"
    cleared = make_ctx("limited", headers=[(b"tsgate-clearance", token.encode())])
    ok = await Pipeline([_Fixed("ratelimit", Challenge("ratelimit.exceeded", level=1))], resolver=runtime).run(cleared)
    assert isinstance(ok.decision, Allow) and [s.name for s in cleared.signals] == ["captcha.cleared"]


async def test_without_clearance_the_challenge_stops_the_request(runtime: CaptchaRuntime) -> None:
    """No clearance: the first Challenge wins and later guards do not run."""
    later = _Fixed("later", ALLOW)
    outcome = await Pipeline([_Fixed("ratelimit", Challenge("ratelimit.exceeded", level=1)), later],
                             resolver=runtime).run(make_ctx("limited"))
    assert isinstance(outcome.decision, Challenge) and later.calls == 0


async def test_shadow_rules_do_not_resolve(runtime: CaptchaRuntime) -> None:
    """A shadow rule records the guard's own Challenge and spends no clearance."""
    token = await token_for(runtime, make_ctx(), "guarded")
    ctx = make_ctx(headers=[(b"tsgate-clearance", token.encode())])
    outcome = await Pipeline([_Fixed("captcha", Challenge("captcha.always"))], "shadow", resolver=runtime).run(ctx)
    assert isinstance(outcome.decision, Allow) and isinstance(outcome.would_have, Challenge)
    assert not any(s.name == "captcha.cleared" for s in ctx.signals)


async def test_broken_resolver_keeps_the_challenge(runtime: CaptchaRuntime) -> None:
    """If the clearance cannot be checked (store down), the challenge stands and the failure is reported."""

    class Broken:
        async def resolve(self, ctx: RequestContext, challenge: Challenge) -> Decision:
            raise ConnectionError("store down")

        def challenge_url(self, ctx: RequestContext, challenge: Challenge) -> str:
            return ""

    outcome = await Pipeline([_Fixed("g", Challenge("x"))], resolver=Broken()).run(make_ctx())
    assert isinstance(outcome.decision, Challenge) and outcome.failures[0].guard == "captcha-resolver"


async def test_guard_triggers(store: StateStore) -> None:
    """always challenges; risk_at_least follows the signals; on_limit follows the named shadow limit."""
    always = CaptchaGuard(RouteCaptcha("s", "always", level=2), store)
    decision = await always.check(make_ctx())
    assert isinstance(decision, Challenge) and decision.level == 2 and decision.reason == "captcha.always"
    risky = CaptchaGuard(RouteCaptcha("s", "risk_at_least", risk_at_least="medium"), store)
    ctx = make_ctx()
    assert isinstance(await risky.check(ctx), Allow)
    ctx.add_signal(Signal("ip.suspicious", 0.6))
    assert isinstance(await risky.check(ctx), Challenge)
    limited = CaptchaGuard(RouteCaptcha("s", "on_limit", on_limit="fan-in"), store)
    ctx = make_ctx()
    ctx.add_signal(Signal("ratelimit.shadow_exceeded", 1.0, "fan-in-2: 5 per 1 hour"))
    assert isinstance(await limited.check(ctx), Allow)  # another limit with a similar name
    ctx.add_signal(Signal("ratelimit.shadow_exceeded", 1.0, "fan-in: 5 per 1 hour"))
    assert isinstance(await limited.check(ctx), Challenge)


async def test_after_failures_counts_responses_and_resets(store: StateStore) -> None:
    """after_failures: 2 — two 401 answers, then a challenge; a success resets the count."""
    guard = CaptchaGuard(RouteCaptcha("login", "after_failures", after_failures=2), store)

    async def attempt(status: int | None) -> Decision:
        ctx = make_ctx("login")
        decision = await guard.check(ctx)
        if status is not None and isinstance(decision, Allow):
            for hook in ctx.after_response:
                await hook(status)
        return decision

    assert [type(await attempt(401)).__name__ for _ in range(2)] == ["Allow", "Allow"]
    assert isinstance(await attempt(None), Challenge)
    other_client = make_ctx("login", ua=b"someone else")
    assert isinstance(await guard.check(other_client), Allow)
    # A success (e.g. after a clearance) resets the consecutive failures.
    ctx = make_ctx("login")
    await guard.check(ctx)
    for hook in ctx.after_response:
        await hook(200)
    assert isinstance(await attempt(None), Allow)
