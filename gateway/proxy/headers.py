"""Header hygiene, both directions.

Inbound, before any guard looks: hop-by-hop headers go (RFC 9110 7.6.1), and so does every
header the client names in ``Connection`` (so ``Connection: X-Forwarded-For`` cannot strip what
we add). Identity and routing headers that only tsgate may set are dropped whatever their value:
``X-Tsgate-*``, the forwarding family, URL- and method-override headers. Credentials meant for
tsgate itself (``Tsgate-Clearance``) are kept for the guards but never forwarded (see
``strip_credentials``). Outbound to the upstream, tsgate sets ``Host``, ``X-Forwarded-*`` and
its identity headers itself."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["HOP_BY_HOP", "TSGATE_CREDENTIALS", "Inbound", "filter_response_headers", "read_inbound",
           "strip_credentials"]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Only tsgate sets these on the way to the upstream; a client's copy is a spoofing attempt.
SPOOFABLE = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"x-original-url",
        b"x-rewrite-url",
        b"x-original-uri",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"expect",  # we stream bodies ourselves; an Expect would make the upstream send 100s
        b"content-length",  # re-framed by the proxy from the body it actually forwards
        b"host",  # set from the upstream (or preserved explicitly)
    }
)

# tsgate's own credentials: guards read them, the upstream never gets them (a CAPTCHA clearance
# is a bearer token for tsgate's challenges, whether or not this request was challenged).
TSGATE_CREDENTIALS = frozenset({b"tsgate-clearance"})


@dataclass(slots=True)
class Inbound:
    """The inbound headers after hygiene, plus the few values the proxy needs."""

    kept: list[tuple[bytes, bytes]] = field(default_factory=list)
    host: bytes | None = None
    hosts: int = 0
    content_length: int | None = None
    chunked: bool = False
    forwarded_for: list[bytes] = field(default_factory=list)
    forwarded_proto: bytes | None = None
    forwarded_host: bytes | None = None
    size: int = 0
    bad_content_length: bool = False
    credentials: bool = False  # a TSGATE_CREDENTIALS header is among ``kept``


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    tokens.discard(b"")
    return frozenset(tokens)


def read_inbound(headers: list[tuple[bytes, bytes]]) -> Inbound:
    """One pass over the client's headers (already lower-case names, as ASGI gives them)."""
    out = Inbound()
    named = _connection_tokens(headers) if any(n == b"connection" for n, _ in headers) else frozenset()
    kept = out.kept
    for name, value in headers:
        out.size += len(name) + len(value) + 4
        if name in SPOOFABLE or name in HOP_BY_HOP or name.startswith(b"x-tsgate-"):
            if name == b"host":
                out.host = value
                out.hosts += 1
            elif name == b"content-length":
                if out.content_length is not None or not value.strip().isdigit():
                    out.bad_content_length = True
                else:
                    out.content_length = int(value)
            elif name == b"transfer-encoding":
                out.chunked = True
            elif name == b"x-forwarded-for":
                out.forwarded_for.append(value)
            elif name == b"x-forwarded-proto":
                out.forwarded_proto = value
            elif name == b"x-forwarded-host":
                out.forwarded_host = value
            continue
        if name in named:
            continue
        if name in TSGATE_CREDENTIALS:
            out.credentials = True
        kept.append((name, value))
    return out


def strip_credentials(headers: list[tuple[bytes, bytes]]) -> None:
    """Remove tsgate's own credentials in place, before a request goes upstream."""
    headers[:] = [(n, v) for n, v in headers if n not in TSGATE_CREDENTIALS]


def filter_response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers minus hop-by-hop ones (and any it names in Connection)."""
    out = [(n, v) for n, v in headers if n not in HOP_BY_HOP]
    if len(out) == len(headers):
        return out  # no Connection header, so nothing else is named
    named = _connection_tokens(headers)
    return [(n, v) for n, v in out if n not in named] if named else out
