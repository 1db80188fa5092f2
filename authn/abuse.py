"""Login abuse: failure counters per login name and per client IP, temporary locks, and a
credential-stuffing signal (one IP or subnet trying many login names). SECURITY.md class 5.

Counters are keyed by the *normalized login name*, whether or not an account has that name, so
locks and challenges reveal nothing about which accounts exist. NIST SP 800-63B-4 caps
consecutive failures at 100; the defaults lock far below that (20)."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Literal

from gateway.core.clock import Clock
from gateway.core.decisions import Signal
from gateway.core.state import StateStore, store_key

__all__ = ["LoginAbuseTracker", "LoginLimits", "LoginVerdict", "subnet_of"]

Verdict = Literal["ok", "challenge", "locked", "ip_blocked"]


@dataclass(frozen=True, slots=True)
class LoginLimits:
    challenge_after: int = 5
    lock_after: int = 20
    lock_for: float = 900.0
    per_ip_failures: int = 50
    stuffing_distinct_logins: int = 10


@dataclass(frozen=True, slots=True)
class LoginVerdict:
    kind: Verdict
    retry_after: int = 0
    signals: tuple[Signal, ...] = ()


def subnet_of(client_ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) a client sits in: stuffing rotates addresses inside one."""
    try:
        addr = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


class LoginAbuseTracker:
    def __init__(self, store: StateStore, clock: Clock, limits: LoginLimits) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits

    def _keys(self, login_key: str, client_ip: str) -> tuple[str, str, str]:
        return (store_key("login", login_key, "fail"), store_key("login", login_key, "lock"),
                store_key("login-ip", client_ip, "fail"))

    async def attempt(self, login_key: str, client_ip: str) -> LoginVerdict:
        """Called before a password is checked. Records the attempt for stuffing detection and
        says whether this attempt may go ahead."""
        limits = self.limits
        fail_key, lock_key, ip_key = self._keys(login_key, client_ip)
        now = self.clock.now()
        signals: list[Signal] = []
        # Distinct login names per IP and per subnet in the window: credential stuffing.
        for scope, entity in (("ip", client_ip), ("subnet", subnet_of(client_ip))):
            names = await self.store.window_add(store_key("login-names", entity), login_key, now, limits.lock_for)
            if names >= limits.stuffing_distinct_logins:
                signals.append(Signal("login.credential_stuffing", 1.0, f"{scope} {entity}: {names} login names"))
        lock = await self.store.get(lock_key)
        if lock is not None:
            return LoginVerdict("locked", math.ceil(limits.lock_for), tuple(signals))
        if await self.store.get_counter(ip_key) >= limits.per_ip_failures:
            return LoginVerdict("ip_blocked", math.ceil(limits.lock_for), tuple(signals))
        failures = await self.store.get_counter(fail_key)
        if failures >= limits.challenge_after or signals:
            return LoginVerdict("challenge", 0, tuple(signals))
        return LoginVerdict("ok", 0, tuple(signals))

    async def record_failure(self, login_key: str, client_ip: str) -> int:
        """Count a failed login; lock the login name once it reaches ``lock_after``."""
        limits = self.limits
        fail_key, lock_key, ip_key = self._keys(login_key, client_ip)
        failures = await self.store.incr(fail_key, ttl=limits.lock_for)
        await self.store.incr(ip_key, ttl=limits.lock_for)
        if failures >= limits.lock_after:
            await self.store.set(lock_key, b"1", ttl=limits.lock_for)
        return failures

    async def record_success(self, login_key: str) -> None:
        """A successful login resets the consecutive-failure count for that login name."""
        await self.store.delete(self._keys(login_key, "")[0])
