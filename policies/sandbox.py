"""Evaluate requests against a policy with no side effects on live state: `policy explain`,
`policy test` and `policy replay` all go through here.

The sandbox compiles the policy with the gateway's own registry and Pipeline, so a verdict is
what the gateway would decide, with three differences that keep it side-effect free:

* state is a private ``memory://`` store and limiter (never the policy's Redis);
* time is a ``FrozenClock`` the caller moves (``at=``), and the wall clock ``limits`` reads is
  pinned to it while a request is evaluated (``limits`` stamps windows with ``time.time()``);
* identity comes from the request description (user, roles, and what the credential was:
  none / valid / invalid / unavailable) instead of a token, decided by the same rules as the
  authn guard (``authn.guard.decide``).

CAPTCHA clearances are not replayed: a Challenge stays a Challenge here (there is no client to
solve it). Content moderation scores for real, with its review items kept in memory; its
campaign and velocity state starts empty, like every other counter here."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from authn.guard import decide
from gateway.core.clock import FrozenClock
from gateway.core.context import Principal, RequestContext
from gateway.core.decisions import Allow, Decision
from gateway.core.guard import Guard, OnError
from gateway.core.paths import PathRefusal, canonicalize
from gateway.core.pipeline import Outcome
from gateway.core.services import GuardServices
from gateway.core.state import MemoryStore
from moderation.sinks import NewReviewItem
from policies.compiled import CompiledPolicy, CompiledRule
from policies.features import build_followers, build_moderation
from policies.loader import LoadedPolicy
from policies.model import Policy, Rule
from policies.registry import GuardRegistry, default_registry
from ratelimit.limiter import Limiter

__all__ = ["Credential", "PolicySandbox", "SandboxRequest", "Step", "Verdict"]

Credential = Literal["none", "valid", "invalid", "unavailable"]
JWKS_PATH = "/.well-known/jwks.json"


@dataclass(frozen=True, slots=True)
class SandboxRequest:
    """One request as a security team (or a decision log) describes it."""

    method: str
    path: str  # raw path, optionally with ?query
    client_ip: str = "203.0.113.10"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    user: str | None = None
    roles: frozenset[str] = frozenset()
    credential: Credential | None = None  # None: "valid" with a user, else "none"
    at: float | None = None  # epoch seconds; None keeps the sandbox clock where it is
    status: int | None = None  # the upstream's answer, for limits that count after the response


@dataclass(frozen=True, slots=True)
class Step:
    """One guard's own answer (before the pipeline combined them)."""

    guard: str
    decision: str
    reason: str = ""
    status: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    rule: str
    mode: str
    decision: str  # allow | deny | challenge | hold
    status: int | None  # the status tsgate itself answers with (None: forwarded upstream)
    reason: str = ""
    guard: str = ""
    steps: tuple[Step, ...] = ()
    would_have: str = ""  # shadow rules: what enforcing would have done
    would_have_reason: str = ""
    params: dict[str, str] = field(default_factory=dict)
    signals: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "mode": self.mode, "decision": self.decision,
                               "status": self.status, "reason": self.reason, "guard": self.guard,
                               "steps": [{k: v for k, v in vars_of(s).items() if v not in ("", None)}
                                         for s in self.steps]}
        if self.would_have:
            out["would_have"] = {"decision": self.would_have, "reason": self.would_have_reason}
        if self.params:
            out["params"] = self.params
        if self.signals:
            out["signals"] = list(self.signals)
        return out


def vars_of(step: Step) -> dict[str, Any]:
    return {"guard": step.guard, "decision": step.decision, "reason": step.reason, "status": step.status,
            "detail": step.detail}


def _step(guard: str, decision: Decision) -> Step:
    if isinstance(decision, Allow):
        return Step(guard, "allow")
    status = getattr(decision, "status", None)
    if status is None:
        status = 403 if decision.kind == "challenge" else 202
    return Step(guard, decision.kind, decision.reason, status, decision.detail)


_steps: ContextVar[list[Step] | None] = ContextVar("tsgate_sandbox_steps", default=None)


class _Recording:
    """Wraps a guard to note its own answer; behaves exactly like it otherwise."""

    def __init__(self, guard: Guard) -> None:
        self.inner = guard
        self.name = guard.name
        self.on_error: OnError = guard.on_error
        self.needs_body = guard.needs_body

    async def check(self, ctx: RequestContext) -> Decision:
        steps = _steps.get()
        try:
            decision = await self.inner.check(ctx)
        except Exception as exc:
            if steps is not None:
                steps.append(Step(self.name, "error", type(exc).__name__, None, str(exc)))
            raise
        if steps is not None:
            steps.append(_step(self.name, decision))
        return decision


class _GivenPrincipal:
    """Stands where the authn guard verifies tokens: the request description says who it is."""

    name = "authn"
    on_error: OnError = "closed"
    needs_body = False

    def __init__(self, mode: Literal["required", "optional"], roles: Sequence[str]) -> None:
        self.mode = mode
        self.roles = frozenset(roles)

    async def check(self, ctx: RequestContext) -> Decision:
        return decide(ctx, self.mode, self.roles)


def _given_principal_guards(rule: Rule, policy: Policy, services: GuardServices) -> list[Guard]:
    if policy.auth is None or rule.auth == "none":
        return []
    return [_GivenPrincipal(rule.auth, rule.roles)]


@contextmanager
def _wall_clock(at: float) -> Iterator[None]:
    """``limits`` reads ``time.time()`` for its windows; pin it to the sandbox clock."""
    real = time.time
    time.time = lambda: at
    try:
        yield
    finally:
        time.time = real


class _MemorySink:
    def __init__(self, items: list[NewReviewItem]) -> None:
        self.items = items

    async def enqueue(self, item: NewReviewItem) -> str:
        self.items.append(item)
        return f"sandbox-{len(self.items)}"


class PolicySandbox:
    """A policy compiled against private state. Not thread-safe; one event loop."""

    def __init__(self, loaded: LoadedPolicy, *, start: float | None = None) -> None:
        self.loaded = loaded
        self.policy = loaded.policy
        self.clock = FrozenClock(wall=start if start is not None else time.time())
        self.store = MemoryStore("memory://", clock=self.clock)
        settings = self.policy.ratelimit
        self.limiter = Limiter("memory://", timeout=max(settings.timeout, 1.0), key_prefix="sandbox",
                               max_memory_keys=settings.max_memory_keys)
        # Content moderation scores for real; its review items stay in memory (self.review_items).
        self.review_items: list[NewReviewItem] = []
        moderation = build_moderation(self.policy, None, sink=_MemorySink(self.review_items))
        # Fake-follower detection starts with empty detectors; labels go to the private store.
        followers = build_followers(self.policy, self.store, None, sink=_MemorySink(self.review_items))
        registry: GuardRegistry = default_registry(limiter=self.limiter, moderation=moderation, followers=followers)
        registry.replace("authn", _given_principal_guards)
        recording = _RecordingRegistry(registry)
        self.compiled = CompiledPolicy(loaded, recording, GuardServices(self.store, self.clock))

    def move_to(self, at: float) -> None:
        """Set the sandbox time (never backwards: records are evaluated in time order)."""
        if at > self.clock.now():
            self.clock.advance(at - self.clock.now())

    def _route(self, method: str, path: str) -> tuple[CompiledRule, dict[str, str]]:
        prefix = self.policy.prefix
        if path.startswith(prefix) or path == prefix[:-1] or path == JWKS_PATH:
            return self.compiled.internal_route(method, path), {}
        return self.compiled.route(method, path)

    async def evaluate(self, request: SandboxRequest) -> Verdict:
        if request.at is not None:
            self.move_to(request.at)
        raw_path, _, query = request.path.partition("?")
        canonical = canonicalize(raw_path.encode("latin-1", "replace"))
        if isinstance(canonical, PathRefusal):
            return Verdict("none", "enforce", "deny", canonical.status, canonical.reason, "intake")
        rule, params = self._route(request.method.upper(), canonical.path)
        principal = None
        if request.user is not None:
            principal = Principal(id=request.user, kind="user", roles=request.roles, name=request.user)
        credential = request.credential or ("valid" if principal is not None else "none")
        ctx = RequestContext(
            decision_id="sandbox", method=request.method.upper(), path=canonical.path, query=query.encode(),
            headers=[(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
            client_ip=request.client_ip, scheme="https", rule_id=rule.id, path_params=params,
            principal=principal, body=request.body, received_at=self.clock.now(), credential=credential)
        steps: list[Step] = []
        token = _steps.set(steps)
        try:
            with _wall_clock(self.clock.now()):
                outcome: Outcome = await rule.pipeline.run(ctx) if rule.pipeline.guards else Outcome(Allow())
                if isinstance(outcome.decision, Allow) and request.status is not None:
                    for hook in ctx.after_response:
                        await hook(request.status)
        finally:
            _steps.reset(token)
        decision = outcome.decision
        verdict = _step(outcome.guard, decision)
        would = outcome.would_have
        return Verdict(
            rule=rule.id, mode=rule.mode, decision=decision.kind,
            status=None if isinstance(decision, Allow) else verdict.status,
            reason=verdict.reason, guard=outcome.guard, steps=tuple(steps),
            would_have=would.kind if would is not None else "",
            would_have_reason=getattr(would, "reason", "") if would is not None else "",
            params=params, signals=tuple(f"{s.name} ({s.evidence})" if s.evidence else s.name for s in ctx.signals))

    async def aclose(self) -> None:
        await self.limiter.aclose()
        await self.store.close()


class _RecordingRegistry(GuardRegistry):
    """The registry, with every guard it builds wrapped in ``_Recording``."""

    def __init__(self, inner: GuardRegistry) -> None:
        super().__init__()
        self._inner = inner
        self.resolver = None  # no client to solve a challenge: it stands (see the module docstring)

    def build(self, rule: Rule, policy: Policy, services: GuardServices) -> list[Guard]:
        return [_Recording(g) for g in self._inner.build(rule, policy, services)]
