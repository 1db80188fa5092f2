"""Running tsgate: the proxy and admin listeners (uvicorn, uvloop + httptools, pinned), signals,
and ``--workers N`` processes sharing the listening sockets.

Signals: SIGTERM/SIGINT stop accepting and drain; SIGHUP reloads the policy file (an invalid
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
    """uvicorn's httptools protocol with a hard cap on request line + headers (past it, 431),
    and coalesced writes (see _CorkedTransport)."""

    max_head_bytes = MAX_HEAD_BYTES
    _in_head = False  # a message has begun and its headers are not complete yet
    _head_bytes = 0
    _discarding = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _CorkedTransport(transport, self.loop)  # type: ignore[assignment]

    def handle_websocket_upgrade(self) -> None:
        corked = self.transport
        if isinstance(corked, _CorkedTransport):
            corked.flush()
            self.transport = corked.transport
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

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

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        """A problem+json answer for requests the parser rejects, then close (framing is lost)."""
        from gateway.core.ids import new_decision_id

        decision_id = new_decision_id()
        body = problem_body(status, reason, decision_id, detail)
        phrase = b"Request Header Fields Too Large" if status == 431 else b"Bad Request"
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\ncontent-length: %d\r\n"
            b"tsgate-decision: %s\r\nconnection: close\r\n\r\n"
            % (status, phrase, len(body), decision_id.encode())
        )
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


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: Any, *, http: Any) -> uvicorn.Config:
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
        timeout_keep_alive=15,
        timeout_graceful_shutdown=20,
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
    proxy_server = uvicorn.Server(_uvicorn_config(proxy, http=BoundedHttpToolsProtocol))
    admin_server = uvicorn.Server(_uvicorn_config(admin, http="httptools"))
    loop = asyncio.get_running_loop()

    def stop() -> None:
        proxy_server.should_exit = True
        admin_server.should_exit = True

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: gateway.reload(actor="sighup"))
    if _early_reload:
        gateway.reload(actor="sighup")
    try:
        await asyncio.gather(proxy_server._serve(sockets=[proxy_sock]), admin_server._serve(sockets=[admin_sock]))
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
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
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
