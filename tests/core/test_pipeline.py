"""The guard pipeline: order, first non-Allow wins, shadow mode, on_error open/closed."""

from __future__ import annotations

import pytest

from gateway.core.context import RequestContext
from gateway.core.decisions import ALLOW, Challenge, Decision, Deny, Hold
from gateway.core.guard import OnError
from gateway.core.pipeline import Pipeline


class ScriptedGuard:
    """A test guard that returns a fixed decision (or raises) and records that it ran."""

    needs_body = False

    def __init__(self, name: str, result: Decision | Exception, on_error: OnError = "closed") -> None:
        self.name = name
        self.result = result
        self.on_error: OnError = on_error
        self.calls = 0

    async def check(self, ctx: RequestContext) -> Decision:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def ctx() -> RequestContext:
    return RequestContext(decision_id="d", method="GET", path="/", query=b"", headers=[], client_ip="192.0.2.1",
                          scheme="http")


async def test_first_non_allow_wins_and_stops() -> None:
    """Guards run in order; the first non-Allow decision is enforced and later guards do not run."""
    deny = Deny(403, "test.deny")
    first, second, third = ScriptedGuard("a", ALLOW), ScriptedGuard("b", deny), ScriptedGuard("c", ALLOW)
    outcome = await Pipeline([first, second, third]).run(ctx())
    assert outcome.decision is deny and outcome.guard == "b"
    assert (first.calls, second.calls, third.calls) == (1, 1, 0)


@pytest.mark.parametrize("decision", [Challenge("test.challenge", level=2), Hold("test.hold")])
async def test_challenge_and_hold_stop_too(decision: Decision) -> None:
    """Challenge and Hold are decisions like Deny: they stop the pipeline."""
    outcome = await Pipeline([ScriptedGuard("a", decision)]).run(ctx())
    assert outcome.decision is decision


async def test_shadow_records_but_allows() -> None:
    """In shadow mode the would-have decision is recorded and the request is allowed."""
    deny = Deny(403, "test.deny")
    outcome = await Pipeline([ScriptedGuard("a", deny)], mode="shadow").run(ctx())
    assert outcome.decision is ALLOW
    assert outcome.would_have is deny and outcome.would_have_guard == "a"


async def test_off_runs_nothing() -> None:
    """A rule that is off runs no guard."""
    guard = ScriptedGuard("a", Deny(403, "x"))
    outcome = await Pipeline([guard], mode="off").run(ctx())
    assert outcome.decision is ALLOW and guard.calls == 0


async def test_failing_closed_guard_denies_with_503() -> None:
    """A guard that raises with on_error=closed yields a 503 deny and a recorded failure."""
    outcome = await Pipeline([ScriptedGuard("auth", RuntimeError("store down"), "closed")]).run(ctx())
    assert isinstance(outcome.decision, Deny) and outcome.decision.status == 503
    assert outcome.decision.reason == "guard.unavailable"
    assert [(f.guard, f.applied) for f in outcome.failures] == [("auth", "closed")]
    assert "store down" in outcome.failures[0].error


async def test_failing_open_guard_continues() -> None:
    """A guard that raises with on_error=open is skipped; later guards still decide."""
    deny = Deny(403, "later")
    outcome = await Pipeline([ScriptedGuard("heuristic", ValueError("bug"), "open"),
                              ScriptedGuard("b", deny)]).run(ctx())
    assert outcome.decision is deny
    assert [(f.guard, f.applied) for f in outcome.failures] == [("heuristic", "open")]


async def test_needs_body_is_the_union() -> None:
    """The pipeline asks for the body when any of its guards does."""
    reader = ScriptedGuard("reader", ALLOW)
    reader.needs_body = True
    assert Pipeline([ScriptedGuard("a", ALLOW), reader]).needs_body
    assert not Pipeline([ScriptedGuard("a", ALLOW)]).needs_body


async def test_staged_rollout_enforces_for_a_stable_share_of_principals() -> None:
    """rollout: 30% enforces for about 30 % of client IPs (binomial bounds for 2,000), always the
    same ones, and records what it would have done for the others."""
    deny = Deny(403, "x.denied")
    pipeline = Pipeline([ScriptedGuard("g", deny)], rollout=30.0, rule_id="r1")
    enforced = []
    for i in range(2000):
        request = RequestContext(decision_id="d", method="GET", path="/", query=b"", headers=[],
                                 client_ip=f"10.0.{i // 250}.{i % 250}", scheme="http")
        outcome = await pipeline.run(request)
        if outcome.decision == deny:
            enforced.append(request.client_ip)
        else:
            assert outcome.would_have == deny  # shadow for the rest
    assert 520 <= len(enforced) <= 680  # mean 600, sd ~20.5: ~4 sd either side
    again = RequestContext(decision_id="d", method="GET", path="/", query=b"", headers=[],
                           client_ip=enforced[0], scheme="http")
    assert (await pipeline.run(again)).decision == deny
    other_rule = Pipeline([ScriptedGuard("g", deny)], rollout=30.0, rule_id="r2")
    other = [ip for ip in enforced if (await other_rule.run(RequestContext(
        decision_id="d", method="GET", path="/", query=b"", headers=[], client_ip=ip, scheme="http"))).decision == deny]
    assert len(other) < len(enforced) * 0.5  # buckets are per rule: not the same early adopters everywhere
