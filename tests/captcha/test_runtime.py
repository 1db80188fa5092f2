"""The resolver and the ladder over memory and Redis: a clearance satisfies a Challenge only for
its principal, scope, level, lifetime and budget; strikes escalate the level, then deny or hold."""

from __future__ import annotations

from typing import Any

from captcha.clearance import principal_binding
from captcha.keys import CaptchaKeys
from captcha.runtime import CaptchaRuntime
from gateway.core.clock import FrozenClock
from gateway.core.context import Principal, RequestContext
from gateway.core.decisions import Allow, Challenge, Deny, Hold, Signal
from tests.captcha.conftest import RuntimeFactory, make_ctx, solve

CHALLENGE = Challenge("captcha.always", level=1)


def binding_of(ctx: RequestContext) -> str:
    return principal_binding(ctx.principal, ctx.client_ip, ctx.header(b"user-agent"))


async def clearance(runtime: CaptchaRuntime, ctx: RequestContext, scope: str = "guarded", level: int = 1) -> str:
    """A token earned the real way: issue, solve, check once, grant."""
    binding = binding_of(ctx)
    challenge = await runtime.issue_challenge(scope, level, binding)
    verdict, reason = await runtime.check_solution(solve(challenge), binding)
    assert reason == "ok"
    return runtime.grant(binding, verdict.scope, verdict.level).token


def with_token(token: str, **kw: Any) -> RequestContext:
    return make_ctx(headers=[(b"tsgate-clearance", token.encode())], **kw)


async def test_valid_clearance_resolves_challenge(runtime: CaptchaRuntime) -> None:
    """Header or cookie, the right clearance turns the Challenge into Allow, and the header is dropped."""
    token = await clearance(runtime, make_ctx())
    ctx = with_token(token)
    assert isinstance(await runtime.resolve(ctx, CHALLENGE), Allow)
    assert ctx.header(b"tsgate-clearance") is None
    cookie = make_ctx(headers=[(b"cookie", f"a=b; tsgate_clearance_guarded={token}".encode())])
    assert isinstance(await runtime.resolve(cookie, CHALLENGE), Allow)


async def test_no_clearance_gets_challenge_with_url(runtime: CaptchaRuntime) -> None:
    """Without a clearance the Challenge stands, and its URL names the rule's scope and level."""
    ctx = make_ctx("posts")
    decision = await runtime.resolve(ctx, CHALLENGE)
    assert isinstance(decision, Challenge) and decision.level == 2  # the rule's level
    assert runtime.challenge_url(ctx, decision) == "/_tsgate/captcha/challenge?scope=writes&level=2"


async def test_solution_accepted_once(runtime: CaptchaRuntime) -> None:
    """The second check of one solved challenge is captcha.replayed (set-if-absent in the store)."""
    binding = binding_of(make_ctx())
    payload = solve(await runtime.issue_challenge("guarded", 1, binding))
    assert (await runtime.check_solution(payload, binding))[1] == "ok"
    assert (await runtime.check_solution(payload, binding))[1] == "captcha.replayed"


async def test_solution_from_another_principal_is_invalid(runtime: CaptchaRuntime) -> None:
    """A challenge fetched by one client and solved for another (a solving farm) is refused."""
    payload = solve(await runtime.issue_challenge("guarded", 1, binding_of(make_ctx())))
    assert (await runtime.check_solution(payload, binding_of(make_ctx(ua=b"farm"))))[1] == "captcha.invalid"


async def test_clearance_of_another_principal_is_refused_and_strikes(runtime: CaptchaRuntime) -> None:
    """Another IP or User-Agent presenting the token is challenged and gets a strike."""
    token = await clearance(runtime, make_ctx())
    for other in (with_token(token, ua=b"other"), with_token(token, ip="198.51.100.1")):
        assert isinstance(await runtime.resolve(other, CHALLENGE), Challenge)
    assert await runtime.ladder.strikes(binding_of(make_ctx(ua=b"other"))) == 1


async def test_user_clearance_is_bound_to_the_account(runtime: CaptchaRuntime) -> None:
    """A signed-in user's clearance works from another IP for that user, not for another user."""
    alice, bob = Principal(id="1", kind="user"), Principal(id="2", kind="user")
    token = await clearance(runtime, make_ctx(principal=alice))
    assert isinstance(await runtime.resolve(with_token(token, principal=alice, ip="192.0.2.9"), CHALLENGE), Allow)
    assert isinstance(await runtime.resolve(with_token(token, principal=bob), CHALLENGE), Challenge)


async def test_clearance_for_another_scope_is_refused(runtime: CaptchaRuntime) -> None:
    """A clearance for 'guarded' does not open 'posts'; one for the 'writes' group opens both writes."""
    token = await clearance(runtime, make_ctx())
    assert isinstance(await runtime.resolve(with_token(token, rule_id="posts"), CHALLENGE), Challenge)
    group = await clearance(runtime, make_ctx(), scope="writes", level=2)
    for rule in ("posts", "comments"):
        assert isinstance(await runtime.resolve(with_token(group, rule_id=rule), CHALLENGE), Allow)


async def test_tampered_clearance_strikes(runtime: CaptchaRuntime) -> None:
    """A modified token is refused and counts as a strike."""
    token = await clearance(runtime, make_ctx())
    bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert isinstance(await runtime.resolve(with_token(bad), CHALLENGE), Challenge)
    assert await runtime.ladder.strikes(binding_of(make_ctx())) == 1


async def test_expired_clearance_is_refused(make_runtime: RuntimeFactory, clock: FrozenClock) -> None:
    """Past its expiry a clearance no longer resolves anything (and is no strike: honest clients age)."""
    runtime = make_runtime()
    token = await clearance(runtime, make_ctx())
    clock.advance(1801)  # the rule's clearance_ttl (RouteCaptcha default)
    assert isinstance(await runtime.resolve(with_token(token), CHALLENGE), Challenge)
    assert await runtime.ladder.strikes(binding_of(make_ctx())) == 0


async def test_insufficient_level_is_refused(runtime: CaptchaRuntime) -> None:
    """A level-1 clearance does not satisfy a level-3 challenge from a rule without its own level."""
    token = await clearance(runtime, make_ctx(), scope="limited", level=1)
    ctx = with_token(token, rule_id="limited")
    decision = await runtime.resolve(ctx, Challenge("ratelimit.exceeded", level=3))
    assert isinstance(decision, Challenge) and decision.level == 3


async def test_budget_spent_then_ladder_denies(runtime: CaptchaRuntime) -> None:
    """uses: 2 — two requests pass per clearance; a spent one is a strike and the next challenge is
    one level up; after the third spent clearance (3 strikes) the ladder denies, with Retry-After."""
    outcomes = []
    level = 1
    for _ in range(3):
        token = await clearance(runtime, make_ctx(), level=level)
        results = [await runtime.resolve(with_token(token), CHALLENGE) for _ in range(3)]
        outcomes.append([type(r).__name__ for r in results])
        last = results[-1]
        if isinstance(last, Challenge):
            assert last.level == level + 1
            level = last.level
    assert outcomes == [["Allow", "Allow", "Challenge"]] * 2 + [["Allow", "Allow", "Deny"]]
    denied = await runtime.resolve(make_ctx(), CHALLENGE)
    assert isinstance(denied, Deny) and denied.status == 403 and denied.reason == "captcha.denied"
    assert dict(denied.headers)["Retry-After"] == "600"


async def test_ladder_holds_where_configured(runtime: CaptchaRuntime) -> None:
    """escalate.then: hold — past the strikes the request is held for review in the named queue."""
    ctx = with_token("c1.nope." + "A" * 60, rule_id="held")
    decision = await runtime.resolve(ctx, CHALLENGE)
    assert isinstance(decision, Hold) and decision.queue == "review" and decision.reason == "captcha.held"


async def test_high_risk_raises_the_level(runtime: CaptchaRuntime) -> None:
    """Signals adding up to the high band ask for one level more."""
    ctx = make_ctx()
    ctx.add_signal(Signal("login.credential_stuffing", 2.0))
    decision = await runtime.resolve(ctx, CHALLENGE)
    assert isinstance(decision, Challenge) and decision.level == 2


async def test_one_use_per_request(runtime: CaptchaRuntime) -> None:
    """Two challenges in one request (e.g. the pipeline and the login handler) spend one use."""
    token = await clearance(runtime, make_ctx())
    ctx = with_token(token)
    assert isinstance(await runtime.resolve(ctx, CHALLENGE), Allow)
    ctx.headers.append((b"tsgate-clearance", token.encode()))
    assert isinstance(await runtime.resolve(ctx, CHALLENGE), Allow)
    assert isinstance(await runtime.resolve(with_token(token), CHALLENGE), Allow)  # 2nd use
    assert isinstance(await runtime.resolve(with_token(token), CHALLENGE), Challenge)  # spent


async def test_captcha_endpoints_are_never_challenged(runtime: CaptchaRuntime) -> None:
    """A challenge from a policy-wide limit does not lock clients out of the challenge itself."""
    ctx = make_ctx("internal", path="/_tsgate/captcha/challenge")
    assert isinstance(await runtime.resolve(ctx, CHALLENGE), Allow)


async def test_clearances_survive_key_rotation(make_runtime: RuntimeFactory) -> None:
    """A runtime with a rotated ring (a new key first, the old one kept) accepts clearances sealed
    before the rotation and seals new ones with the new key."""
    before = make_runtime(keys=CaptchaKeys([("old", b"o" * 32)]))
    token = await clearance(before, make_ctx())
    after = make_runtime(keys=CaptchaKeys([("new", b"n" * 32), ("old", b"o" * 32)]))
    assert isinstance(await after.resolve(with_token(token), CHALLENGE), Allow)
    assert (await clearance(after, make_ctx())).startswith("c1.new.")
    dropped = make_runtime(keys=CaptchaKeys([("new", b"n" * 32)]))
    assert isinstance(await dropped.resolve(with_token(token), CHALLENGE), Challenge)
