"""What guards may use besides the request: shared state and time. Built once by gateway.app."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.clock import Clock, SystemClock
from gateway.core.state.base import StateStore

__all__ = ["GuardServices"]


@dataclass(frozen=True, slots=True)
class GuardServices:
    store: StateStore
    clock: Clock = field(default_factory=SystemClock)
