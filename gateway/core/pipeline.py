"""The guard pipeline: guards run in the rule's order, the first non-Allow decision wins.

A rule in ``shadow`` mode runs every guard and records what it *would* have done, but the
request is allowed. A guard that raises is a bug or broken infrastructure: the pipeline applies
that guard's ``on_error`` (``closed`` → 503 deny, ``open`` → continue) and reports it, so the
caller can count and log it. Auth guards are built fail-closed; heuristics may fail open.

A Challenge is not final by itself: before it stops the request, the pipeline asks its
``ChallengeResolver`` (the CAPTCHA runtime), which may find a valid clearance and answer Allow —
then the remaining guards still run, so a clearance never skips authn or a later limit — or
answer the Challenge at an escalated level, or Deny/Hold (the escalation ladder). Any guard may
return Challenge; the guard contract stays one method."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gateway.core.context import RequestContext
from gateway.core.decisions import ALLOW, Allow, Challenge, Decision, Deny
from gateway.core.guard import Guard

__all__ = ["ChallengeResolver", "GuardFailure", "Mode", "Outcome", "Pipeline"]

Mode = Literal["enforce", "shadow", "off"]

log = logging.getLogger("tsgate.pipeline")


@dataclass(frozen=True, slots=True)
class GuardFailure:
    guard: str
    error: str
    applied: Literal["open", "closed"]


@dataclass(slots=True)
class Outcome:
    """What the pipeline decided. ``decision`` is what is enforced; ``would_have`` is the
    decision a shadow rule would have enforced (None when everything allowed)."""

    decision: Decision
    guard: str = ""
    would_have: Decision | None = None
    would_have_guard: str = ""
    failures: list[GuardFailure] = field(default_factory=list)


FAILED_CLOSED = Deny(503, "guard.unavailable", "A required check could not run; try again shortly.")


class ChallengeResolver(Protocol):
    """Turns a guard's Challenge into the final word: Allow (a clearance satisfies it), the
    Challenge (possibly at a higher level), or Deny/Hold. ``challenge_url`` is where a client
    fetches the matching challenge."""

    async def resolve(self, ctx: RequestContext, challenge: Challenge) -> Decision: ...

    def challenge_url(self, ctx: RequestContext, challenge: Challenge) -> str: ...


class Pipeline:
    """An ordered, immutable list of guards with the rule's mode."""

    __slots__ = ("guards", "mode", "needs_body", "resolver", "rollout", "rule_id")

    def __init__(self, guards: Sequence[Guard], mode: Mode = "enforce",
                 resolver: ChallengeResolver | None = None, *, rollout: float = 100.0, rule_id: str = "") -> None:
        self.guards: tuple[Guard, ...] = tuple(guards)
        self.mode: Mode = mode
        self.resolver = resolver
        self.needs_body = any(g.needs_body for g in self.guards)
        self.rollout = rollout  # percent of principals the rule is enforced for; shadow for the rest
        self.rule_id = rule_id

    def enforced_for(self, ctx: RequestContext) -> bool:
        """Staged rollout: a stable bucket per (rule, principal), the user id once authn has run,
        else the client IP. The same principal always lands on the same side."""
        if self.rollout >= 100.0:
            return True
        principal = ctx.principal
        who = principal.id if principal is not None and principal.authenticated else "ip:" + ctx.client_ip
        digest = hashlib.blake2b(f"{self.rule_id}\x00{who}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 * 100.0 < self.rollout

    async def run(self, ctx: RequestContext) -> Outcome:
        if not self.guards or self.mode == "off":
            return Outcome(ALLOW)
        outcome = Outcome(ALLOW)
        cleared = 0  # the level a clearance already satisfied in this request (spent once)
        for guard in self.guards:
            try:
                decision = await guard.check(ctx)
            except Exception as exc:  # a guard's bug or broken store: apply its on_error
                applied = guard.on_error
                outcome.failures.append(GuardFailure(guard.name, f"{type(exc).__name__}: {exc}", applied))
                log.warning("guard %s failed (%s), failing %s", guard.name, exc, applied, exc_info=exc)
                if applied == "open":
                    continue
                decision = FAILED_CLOSED
            if isinstance(decision, Allow):
                continue
            # Shadow rules record the guard's own Challenge: resolving could spend a clearance's
            # budget for a request that is let through anyway.
            if (isinstance(decision, Challenge) and self.resolver is not None and self.mode == "enforce"
                    and self.enforced_for(ctx)):
                if decision.level <= cleared:
                    continue
                try:
                    resolved = await self.resolver.resolve(ctx, decision)
                except Exception as exc:  # cannot check a clearance: the challenge stands (fail closed)
                    outcome.failures.append(GuardFailure("captcha-resolver", f"{type(exc).__name__}: {exc}", "closed"))
                    log.warning("challenge resolver failed (%s); the challenge stands", exc, exc_info=exc)
                    resolved = decision
                if isinstance(resolved, Allow):
                    cleared = decision.level
                    continue
                decision = resolved
            if self.mode == "shadow" or not self.enforced_for(ctx):
                outcome.would_have = decision
                outcome.would_have_guard = guard.name
                return outcome
            outcome.decision = decision
            outcome.guard = guard.name
            return outcome
        return outcome
