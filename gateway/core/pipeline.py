"""The guard pipeline: guards run in the rule's order, the first non-Allow decision wins.

A rule in ``shadow`` mode runs every guard and records what it *would* have done, but the
request is allowed. A guard that raises is a bug or broken infrastructure: the pipeline applies
that guard's ``on_error`` (``closed`` → 503 deny, ``open`` → continue) and reports it, so the
caller can count and log it. Auth guards are built fail-closed; heuristics may fail open."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from gateway.core.context import RequestContext
from gateway.core.decisions import ALLOW, Allow, Decision, Deny
from gateway.core.guard import Guard

__all__ = ["GuardFailure", "Mode", "Outcome", "Pipeline"]

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


class Pipeline:
    """An ordered, immutable list of guards with the rule's mode."""

    __slots__ = ("guards", "mode", "needs_body")

    def __init__(self, guards: Sequence[Guard], mode: Mode = "enforce") -> None:
        self.guards: tuple[Guard, ...] = tuple(guards)
        self.mode: Mode = mode
        self.needs_body = any(g.needs_body for g in self.guards)

    async def run(self, ctx: RequestContext) -> Outcome:
        if not self.guards or self.mode == "off":
            return Outcome(ALLOW)
        outcome = Outcome(ALLOW)
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
            if self.mode == "shadow":
                outcome.would_have = decision
                outcome.would_have_guard = guard.name
                return outcome
            outcome.decision = decision
            outcome.guard = guard.name
            return outcome
        return outcome
