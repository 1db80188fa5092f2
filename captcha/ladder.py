"""The escalation ladder: challenge first, then deny (or hold for review) once a principal has
too many strikes, with the level rising on the way.

A strike is something an honest client does not do: a wrong, tampered or replayed solution, a
tampered clearance or one belonging to someone else, or a clearance whose use budget is spent
(a farm that buys one solve and replays it for many requests). Strikes are counted per principal
binding in the shared store over the rule's window, across scopes: misbehaving anywhere raises
the price everywhere."""

from __future__ import annotations

import math

from captcha.settings import Escalation
from gateway.core.decisions import Decision, Deny, Hold
from gateway.core.state import StateStore, store_key

__all__ = ["Ladder", "risk_band"]

_BANDS = {"low": 0, "medium": 1, "high": 2}


def risk_band(score: float) -> str:
    """low / medium / high from the summed signal weights (the thresholds identity uses for the
    ``risk`` claim of X-Tsgate-Assertion, so the backend and the CAPTCHA agree)."""
    return "high" if score >= 2.0 else "medium" if score >= 0.5 else "low"


def band_at_least(band: str, floor: str) -> bool:
    return _BANDS.get(band, 0) >= _BANDS.get(floor, 2)


class Ladder:
    def __init__(self, store: StateStore, max_level: int) -> None:
        self.store = store
        self.max_level = max_level

    @staticmethod
    def _key(binding: str) -> str:
        return store_key("captcha-strikes", binding)

    async def strikes(self, binding: str) -> int:
        return await self.store.get_counter(self._key(binding))

    async def strike(self, binding: str, escalation: Escalation) -> int:
        return await self.store.incr(self._key(binding), ttl=escalation.window)

    def level(self, base: int, strikes: int, band: str) -> int:
        """The level to ask for: the base, one more per strike and one more at high risk."""
        bump = strikes + (1 if band == "high" else 0)
        return max(1, min(self.max_level, base + bump))

    @staticmethod
    def past_challenge(strikes: int, escalation: Escalation, scope: str) -> Decision | None:
        """Deny or Hold once the strikes reach the rule's threshold; None while a challenge is
        still the answer."""
        if strikes < escalation.strikes:
            return None
        if escalation.then == "hold":
            return Hold("captcha.held", escalation.queue,
                        f"Too many failed challenges for '{scope}'; the request is held for review.")
        wait = str(max(1, math.ceil(escalation.window)))
        return Deny(403, "captcha.denied", "Too many failed or spent challenges; try again later.",
                    (("Retry-After", wait),))
