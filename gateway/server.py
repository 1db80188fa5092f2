"""Running tsgate: the proxy and admin listeners (uvicorn, uvloop + httptools, pinned), signals,
and ``--workers N`` processes sharing the listening sockets.

Signals: SIGTERM/SIGINT drain: /readyz turns false at once, the proxy stops accepting after
``drain_delay`` (time for load balancers to notice), in-flight requests get ``drain_timeout`` to
finish, then the admin listener stops and logs are flushed; a second SIGTERM skips the wait.
SIGHUP reloads the policy file (an invalid
file keeps the running policy). With N workers the parent forwards signals to every worker, and
a reload through the admin API of one worker is broadcast to the others the same way."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.api.app import create_admin_app
from gateway.app import Gateway
from gateway.core.problem import problem_body
from gateway.proxy.app import ProxyApp
from policies.features import share_dev_keys
from policies.loader import LoadedPolicy

__all__ = ["BoundedHttpToolsProtocol", "ServeOptions", "serve"]

log = logging.getLogger("tsgate")

# httptools (llhttp) puts no limit on the request line or header block; uvicorn keeps appending.
# A client streaming an endless header would grow memory without bound (SECURITY.md class 6).
MAX_HEAD_BYTES = 64 * 1024
# Slowloris: a client that opens connections and sends its head a byte at a time holds a
# connection per request for as long as it likes; uvicorn has no deadline before the first request.
HEADER_TIMEOUT = 10.0
# The same for a body trickled a byte at a time: the longest pause between two body reads.
BODY_TIMEOUT = 30.0


class _CorkedTransport:
    """Coalesces the writes of one event-loop turn into one ``send``.

    uvicorn writes a response's head and body separately; on loopback each write is a syscall
    and together they were ~20 % of a pass-through request's CPU. Writes are buffered and
    flushed at the end of the turn (or at 64 KiB), and before close, so ordering is unchanged."""

    __slots__ = ("_buf", "_loop", "_scheduled", "_size", "transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._buf: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._buf.append(data)
        self._size += len(data)
        if self._size >= 65536:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._buf:
            data = b"".join(self._buf) if len(self._buf) > 1 else self._buf[0]
            self._buf.clear()
            self._size = 0
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a hard cap on request line + headers (past it, 431), a
    deadline for each complete head from the connection or the message's first byte (past it,
    408 and close), a cap on open connections (past it, 503 at accept), and coalesced writes
    (see _CorkedTransport). A body that pauses longer than ``body_timeout`` between reads (while
    tsgate is ready to read) ends the connection: the request is logged as a client disconnect.
    ``configured`` makes a subclass with a server's settings."""

    max_head_bytes = MAX_HEAD_BYTES
    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT
    max_connections: int | None = None
    _in_head = False  # a message has begun and its headers are not complete yet
    _head_bytes = 0
    _discarding = False
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _head_started = 0.0
    _in_body = False  # headers complete, the message (its body) not yet
    _body_last = 0.0

    @classmethod
    def configured(cls, *, header_timeout: float, max_connections: int | None,
                   body_timeout: float = BODY_TIMEOUT) -> type[BoundedHttpToolsProtocol]:
        return type("BoundedHttpToolsProtocol", (cls,), {
            "header_timeout": header_timeout, "max_connections": max_connections, "body_timeout": body_timeout})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _CorkedTransport(transport, self.loop)  # type: ignore[assignment]
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self._refuse(503, "server.busy", "Too many open connections; retry shortly.")
            return
        # The first request's deadline runs from the connection: one that never sends is cut off too.
        self._head_started = self.loop.time()
        if self.header_timeout > 0:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    # Timers are armed lazily, at the end of data_received, only while a head or body is actually
    # incomplete: a request that arrives whole in one read costs no timer at all.
    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_bytes or self._in_head:
            self._refuse(408, "request.header_timeout", "The request head was not complete in time.")
        elif not self.transport.is_closing():  # nothing sent at all: nobody to answer
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._in_body:
            return
        idle = self.loop.time() - self._body_last
        # Not the client's fault: tsgate is not reading (a slow upstream paused reading) or has
        # not asked for the body yet (Expect: 100-continue not answered). The clock restarts.
        if (self.flow is not None and self.flow.read_paused) or self.expect_100_continue:
            self._body_last, idle = self.loop.time(), 0.0
        if idle < self.body_timeout:
            self._body_timer = self.loop.call_later(self.body_timeout - idle, self._body_timed_out)
            return
        log.info("closing a connection whose request body stalled for %.0fs", self.body_timeout)
        if not self.transport.is_closing():
            self.transport.close()  # the app sees http.disconnect; nothing can be answered mid-body

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timers()
        self._in_body = False
        corked = self.transport
        if isinstance(corked, _CorkedTransport):
            corked.flush()
            self.transport = corked.transport
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        if self._head_timer is None:  # later messages: from their first byte
            self._head_started = self.loop.time()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return  # after a refusal: drain what the client still sends, then close (see _refuse)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._refuse(400, "request.malformed", "The request is not valid HTTP/1.1.")
            return
        # httptools hands a header to Python only once it is complete, buffering it in C until
        # then; so count raw bytes while a head is incomplete, not header callbacks.
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, "request.headers_too_large", "The request head is too large.")
            elif self._head_timer is None and self.header_timeout > 0:
                remaining = self.header_timeout - (self.loop.time() - self._head_started)
                self._head_timer = self.loop.call_later(max(remaining, 0.0), self._head_timed_out)
        elif self._in_body:
            self._body_last = self.loop.time()
            if self._body_timer is None and self.body_timeout > 0:
                self._body_timer = self.loop.call_later(self.body_timeout, self._body_timed_out)

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        """A problem+json answer for requests the parser rejects, then close (framing is lost)."""
        from gateway.core.ids import new_decision_id

        decision_id = new_decision_id()
        body = problem_body(status, reason, decision_id, detail)
        phrase = HTTPStatus(status).phrase.encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\ncontent-length: %d\r\n"
            b"tsgate-decision: %s\r\nconnection: close\r\n\r\n"
            % (status, phrase, len(body), decision_id.encode())
        )
        self._cancel_timers()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(head + body)
        if isinstance(transport, _CorkedTransport):
            transport.flush()
            transport = transport.transport
        # Lingering close: closing with unread client bytes makes the kernel send RST, and the
        # client would lose our answer. Send FIN, discard input for a moment, then close.
        self._discarding = True
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(1.0, transport.close)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9090
    workers: int = 1
    admin_token: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    header_timeout: float = HEADER_TIMEOUT  # seconds for a complete request head (0: none)
    body_timeout: float = BODY_TIMEOUT  # longest pause between two reads of a request body (0: none)
    keepalive_timeout: float = 15.0  # idle seconds between requests on one connection
    max_connections: int | None = None  # open proxy connections per worker; past it 503 at accept
    drain_delay: float = 0.0  # seconds between SIGTERM (readiness false) and closing the listener
    drain_timeout: float = 20.0  # seconds in-flight requests get to finish after the listener closes


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: Any, *, http: Any, keepalive: float = 15.0, graceful: float = 20.0) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="uvloop",
        http=http,
        ws="websockets-sansio",
        lifespan="off",
        access_log=False,
        proxy_headers=False,  # never let uvicorn rewrite the client address from X-Forwarded-For
        server_header=False,
        log_config=None,
        timeout_keep_alive=keepalive,  # type: ignore[arg-type]  # uvicorn annotates int, uses call_later
        timeout_graceful_shutdown=graceful,  # type: ignore[arg-type]
        ws_max_size=1 << 20,
    )


async def _serve_worker(loaded: LoadedPolicy, opts: ServeOptions, proxy_sock: socket.socket,
                        admin_sock: socket.socket, parent_pid: int | None) -> None:
    gateway = Gateway(loaded, overrides=opts.overrides)
    await gateway.start()
    proxy = ProxyApp(gateway)
    admin = create_admin_app(gateway, opts.admin_token)
    if parent_pid is not None:
        # A reload through this worker's admin API must reach every worker: ask the parent.
        admin.state.on_reload = lambda: os.kill(parent_pid, signal.SIGHUP)
    protocol = BoundedHttpToolsProtocol.configured(header_timeout=opts.header_timeout,
                                                   max_connections=opts.max_connections,
                                                   body_timeout=opts.body_timeout)
    proxy_server = uvicorn.Server(_uvicorn_config(proxy, http=protocol, keepalive=opts.keepalive_timeout,
                                                  graceful=opts.drain_timeout))
    admin_server = uvicorn.Server(_uvicorn_config(admin, http="httptools", graceful=opts.drain_timeout))
    loop = asyncio.get_running_loop()

    def close_proxy() -> None:
        proxy_server.should_exit = True

    def stop() -> None:
        if gateway.draining:  # a second signal: stop waiting for in-flight requests
            proxy_server.force_exit = True
            admin_server.force_exit = True
            return
        gateway.draining = True  # /readyz answers 503 from now on
        log.info("draining: readiness is false; the proxy stops accepting in %.1fs", opts.drain_delay)
        if opts.drain_delay > 0:
            loop.call_later(opts.drain_delay, close_proxy)
        else:
            close_proxy()

    async def run_proxy() -> None:
        try:
            await proxy_server._serve(sockets=[proxy_sock])
        finally:  # the admin listener answers /readyz (false) until the proxy has drained
            admin_server.should_exit = True

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: gateway.reload(actor="sighup"))
    if _early_reload:
        gateway.reload(actor="sighup")
    try:
        await asyncio.gather(run_proxy(), admin_server._serve(sockets=[admin_sock]))
    finally:
        await gateway.aclose()


def _run_worker(loaded: LoadedPolicy, opts: ServeOptions, proxy_sock: socket.socket,
                admin_sock: socket.socket, parent_pid: int | None) -> None:
    import uvloop

    uvloop.run(_serve_worker(loaded, opts, proxy_sock, admin_sock, parent_pid))


_early_reload = False


def _remember_reload(_sig: int, _frame: Any) -> None:
    """A SIGHUP that arrives before the event loop runs is kept and applied at start."""
    global _early_reload
    _early_reload = True


def serve(loaded: LoadedPolicy, opts: ServeOptions) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGHUP, _remember_reload)
    for warning in share_dev_keys(os.environ, identity=loaded.policy.auth is not None):
        print(f"tsgate: WARNING: {warning}", file=sys.stderr, flush=True)
    proxy_sock = _bind(opts.host, opts.port)
    admin_sock = _bind(opts.admin_host, opts.admin_port)
    print(f"tsgate: proxy on http://{opts.host}:{opts.port}, admin on http://{opts.admin_host}:{opts.admin_port}, "
          f"policy {loaded.source} ({loaded.sha256[:12]}), {opts.workers} worker(s)", file=sys.stderr, flush=True)
    if opts.workers <= 1:
        _run_worker(loaded, opts, proxy_sock, admin_sock, None)
        return 0
    return _supervise(loaded, opts, proxy_sock, admin_sock)


def _supervise(loaded: LoadedPolicy, opts: ServeOptions, proxy_sock: socket.socket,
               admin_sock: socket.socket) -> int:
    """Fork N workers that share both sockets; forward signals; replace workers that crash."""
    parent = os.getpid()
    children: dict[int, int] = {}  # pid → slot
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # child
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, _remember_reload)
            try:
                _run_worker(loaded, opts, proxy_sock, admin_sock, parent)
            finally:
                os._exit(0)
        children[pid] = slot

    def forward(sig: int, _frame: Any) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT) and not stopping:
            stopping = True
            # The workers close their copies as they drain; ours would keep the socket listening
            # (connections queued in the backlog and never served) until the last worker exits.
            proxy_sock.close()
        for pid in list(children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for slot in range(opts.workers):
        spawn(slot)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        slot = children.pop(pid, -1)
        if slot >= 0 and not stopping:
            log.error("worker %d exited (status %d); starting a replacement", pid, status)
            spawn(slot)
    return 0
