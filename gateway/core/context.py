"""What a guard sees of a request: one RequestContext per request, built once by the proxy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.core.decisions import Signal

__all__ = ["ANONYMOUS_ROLES", "Principal", "RequestContext"]

ANONYMOUS_ROLES: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking. Anonymous principals are keyed by client IP (``id == "ip:" + ip``)."""

    id: str
    kind: str = "anonymous"  # anonymous | user | external
    roles: frozenset[str] = ANONYMOUS_ROLES
    name: str = ""  # what the upstream sees in X-Tsgate-User (a username, or an external subject)
    session: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return self.kind != "anonymous"

    @classmethod
    def anonymous(cls, client_ip: str) -> Principal:
        return cls(id="ip:" + client_ip)


@dataclass(slots=True)
class RequestContext:
    """The request as tsgate checked it.

    ``path`` is the canonical path: the one that was matched, authorized and is forwarded.
    ``headers`` are the inbound headers after hygiene (lower-case names, ``x-tsgate-*`` dropped).
    ``body`` is set only when a guard asked for the body to be buffered (bounded).
    """

    decision_id: str
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    client_ip: str
    scheme: str
    rule_id: str = ""
    path_params: dict[str, str] = field(default_factory=dict)
    principal: Principal | None = None
    body: bytes | None = None
    signals: list[Signal] = field(default_factory=list)
    upstream_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    response_headers: list[tuple[str, str]] = field(default_factory=list)  # added to the client's response
    # Work for after the response status is known (e.g. limits that count only failed logins).
    after_response: list[Callable[[int], Awaitable[None]]] = field(default_factory=list)
    received_at: float = 0.0
    # What the authn guard made of the credential: "" (not checked), "none", "valid", "invalid",
    # "unavailable". Logged, so that `policy replay` can re-decide without the token itself.
    credential: str = ""

    def header(self, name: bytes) -> bytes | None:
        """The first inbound header named ``name`` (lower-case bytes), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def add_signal(self, signal: Signal) -> None:
        self.signals.append(signal)

    def who(self) -> Principal:
        """The principal, anonymous by client IP until an authenticator says otherwise."""
        if self.principal is None:
            self.principal = Principal.anonymous(self.client_ip)
        return self.principal
