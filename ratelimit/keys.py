"""Who a limit counts: the identifier composed from a spec's key parts and the request.

A missing part (anonymous user for ``user``, absent header, body field or claim) yields None:
the limit does not apply to that request. Policies that must cover everyone add an ``ip``-keyed
limit next to the specific one. Values are normalised (IPv6 grouped by /64, body strings
NFKC + casefold + strip) so trivial variations of one identity share one budget; long values
are hashed so keys stay bounded in size whatever the client sends."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import re
import unicodedata
from typing import Any

from gateway.core.context import RequestContext
from ratelimit.spec import LimitSpec

__all__ = ["ParsedBody", "client_network", "compose_key", "normalize_text", "resolve_pointer"]

MAX_PART = 64  # longer part values are replaced by a sha256 prefix
_MISSING = object()
_INDEX = re.compile(r"^(0|[1-9][0-9]{0,8})$")


class ParsedBody:
    """The request body decoded as JSON at most once per request (None when absent or not JSON)."""

    __slots__ = ("_ctx", "_done", "_value")

    def __init__(self, ctx: RequestContext) -> None:
        self._ctx = ctx
        self._done = False
        self._value: Any = _MISSING

    @property
    def value(self) -> Any:
        if not self._done:
            self._done = True
            body = self._ctx.body
            if body:
                try:
                    self._value = json.loads(body)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    self._value = _MISSING
        return self._value


def normalize_text(text: str) -> str:
    """NFKC, casefold, strip: ``" Alice@Example.COM "`` and its fullwidth form agree."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


@functools.lru_cache(maxsize=65_536)  # bounded; parsing an address was ~5 % of a limited request
def client_network(ip: str) -> str:
    """The client's address, IPv6 grouped to its /64 (one subscriber usually owns a whole /64)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def resolve_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901: the value at ``pointer`` in ``document``, or a sentinel object when absent."""
    current = document
    for raw in pointer.split("/")[1:]:
        step = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict):
            if step not in current:
                return _MISSING
            current = current[step]
        elif isinstance(current, list):
            if not _INDEX.match(step) or int(step) >= len(current):
                return _MISSING
            current = current[int(step)]
        else:
            return _MISSING
    return current


def _bounded(value: str) -> str:
    if len(value) <= MAX_PART and "|" not in value:
        return value
    return "h:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _part(part: str, ctx: RequestContext, body: ParsedBody) -> str | None:
    principal = ctx.principal
    if part == "ip":
        return client_network(ctx.client_ip)
    if part == "user":
        return principal.id if principal is not None and principal.authenticated else None
    if part == "user_or_ip":
        if principal is not None and principal.authenticated:
            return "u:" + principal.id
        return "ip:" + client_network(ctx.client_ip)
    if part == "route":
        return ctx.rule_id or None
    kind, _, arg = part.partition(":")
    if kind == "path":
        value = ctx.path_params.get(arg)
        return value.casefold() if value else None
    if kind == "header":
        raw = ctx.header(arg.encode("ascii"))
        return raw.decode("latin-1").strip() if raw else None
    if kind == "claim":
        if principal is None or not principal.authenticated or arg not in principal.claims:
            return None
        claim = principal.claims[arg]
        return None if claim is None else str(claim)
    if kind == "body":
        document = body.value
        if document is _MISSING:
            return None
        found = resolve_pointer(document, arg)
        if found is _MISSING or found is None or isinstance(found, dict | list):
            return None
        if isinstance(found, str):
            text = normalize_text(found)
            return text or None
        return json.dumps(found)  # numbers and booleans, canonical JSON text
    raise ValueError(f"unknown key part {part!r}")  # unreachable: LimitSpec validated it


def compose_key(spec: LimitSpec, ctx: RequestContext, body: ParsedBody | None = None) -> str | None:
    """``"{spec.name}:{part}|{part}..."`` for this request, or None when any part is missing.

    Pass one ``ParsedBody`` for every spec checked on a request so the body is decoded once."""
    parsed = body if body is not None else ParsedBody(ctx)
    values: list[str] = []
    for part in spec.key:
        value = _part(part, ctx, parsed)
        if value is None:
            return None
        values.append(_bounded(value))
    return f"{spec.name}:" + "|".join(values)
