"""IP allow/deny lists by CIDR: the first guard, and the cheapest refusal tsgate has."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gateway.core.context import RequestContext
from gateway.core.decisions import ALLOW, Decision, Deny, Signal
from gateway.core.guard import OnError
from gateway.core.netaddr import parse_ip

__all__ = ["IpFilterGuard"]

DENIED = Deny(403, "ip.denied", "Requests from this network are not accepted.")
NOT_ALLOWED = Deny(403, "ip.not_allowed", "This route accepts requests only from listed networks.")


class IpFilterGuard:
    """Deny listed networks; if an allow list is set, deny everything not on it.
    Deny wins over allow. An unparsable client address is treated as not allowed."""

    name = "ip"
    on_error: OnError = "closed"
    needs_body = False

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow = tuple(ipaddress.ip_network(c, strict=False) for c in allow)
        self.deny = tuple(ipaddress.ip_network(c, strict=False) for c in deny)
        self._memo: dict[str, Decision] = {}

    def _decide(self, client_ip: str) -> Decision:
        addr = parse_ip(client_ip)
        if addr is None:
            return NOT_ALLOWED if self.allow else ALLOW
        if any(addr in net for net in self.deny):
            return DENIED
        if self.allow and not any(addr in net for net in self.allow):
            return NOT_ALLOWED
        return ALLOW

    async def check(self, ctx: RequestContext) -> Decision:
        decision = self._memo.get(ctx.client_ip)
        if decision is None:
            decision = self._decide(ctx.client_ip)
            if len(self._memo) >= 65536:  # bounded: client addresses are attacker-chosen
                self._memo.clear()
            self._memo[ctx.client_ip] = decision
        if decision is not ALLOW:
            ctx.add_signal(Signal("ip.listed", 1.0, ctx.client_ip))
        return decision
