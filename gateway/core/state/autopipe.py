"""Auto-pipelining for redis-py: every command issued during one event-loop turn goes to Redis as
one pipeline (one write, one read), and each caller gets its own result.

Why: through ``redis.asyncio`` a single command costs ~50-110 µs of gateway CPU (connection
checkout, command packing, per-command reads), against ~8 µs per command when 32 share one
batch (measured on this 2-core machine, ``bench/micro.py``). Under load many requests wait on Redis in the same
loop turn, so batching them is the difference between Redis dominating the request path and
Redis being noise. The commands stay independent (no MULTI): one command's error is that
caller's error only.

On a single Redis a batch is packed here (redis-py's generic ``pack_command`` was the largest
cost in a profile) and written on one pooled redis-py connection, whose parser (hiredis when
installed) reads the replies; connection set-up, AUTH, SELECT and TLS stay redis-py's. On a
cluster the batch goes through redis-py's ``ClusterPipeline``, which routes by slot.

Each batch has one deadline timer (cheaper than ``asyncio.wait_for`` per call): callers still
waiting when it fires get ``TimeoutError``. ``commands`` and ``round_trips`` count what was sent,
so the benchmark can report Redis round trips per request."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from hashlib import sha1
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["AutoPipeline"]

_Waiter = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


class AutoPipeline:
    """Batch commands over ``client`` (a ``redis.asyncio.Redis`` or ``RedisCluster``).

    ``max_batch`` bounds one pipeline; a larger burst is split into several, sent concurrently
    (each takes its own pooled connection)."""

    def __init__(self, client: Any, *, timeout: float, max_batch: int = 256) -> None:
        if not timeout > 0:
            raise ValueError("timeout: must be > 0")
        self._client = client
        self._direct = isinstance(client, Redis)
        self.timeout = timeout
        # How long a batch may keep its connection waiting for replies (callers gave up earlier).
        self.io_timeout = max(4 * timeout, 0.2)
        self.max_batch = max_batch
        self._queue: list[_Waiter] = []
        self._scheduled = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self.commands = 0
        self.round_trips = 0

    def execute(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command (``"EVALSHA", sha, 2, k1, k2, ...``); await the returned future for
        its reply. The future raises the command's own redis error, or ``TimeoutError``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    async def run_script(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA ``script``; on a server that does not know it yet (first use, a restart, SCRIPT
        FLUSH) fall back to EVAL, which also caches it for the next call."""
        sha = _script_sha(script)
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script, len(keys), *keys, *args)

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        loop = asyncio.get_running_loop()
        for start in range(0, len(queue), self.max_batch):
            batch = queue[start:start + self.max_batch]
            task = loop.create_task(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            loop.call_later(self.timeout, _expire, batch)

    async def _send(self, batch: Sequence[_Waiter]) -> None:
        live = [(args, future) for args, future in batch if not future.done()]
        if not live:
            return
        self.commands += len(live)
        self.round_trips += 1
        if self._direct:
            await self._send_direct(live)
            return
        pipe = self._client.pipeline(transaction=False)
        for args, _ in live:
            pipe.execute_command(*args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            _fail(live, ConnectionError("redis pipeline cancelled"))
            raise
        except Exception as exc:  # the connection failed: every caller in the batch gets it
            _fail(live, exc)
            return
        for (_, future), reply in zip(live, replies, strict=True):
            if future.done():  # timed out or cancelled meanwhile
                continue
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _send_direct(self, live: Sequence[_Waiter]) -> None:
        pool = self._client.connection_pool
        try:
            conn = await pool.get_connection()
        except asyncio.CancelledError:
            _fail(live, ConnectionError("redis pipeline cancelled"))
            raise
        except Exception as exc:
            _fail(live, exc)
            return
        pending = list(live)
        try:
            await conn.send_packed_command(b"".join(_pack(args) for args, _ in live), check_health=False)
            # One deadline for the whole batch instead of redis-py's per-reply timeout context
            # (math.inf: no per-read timeout); past it the connection is dropped, not reused.
            async with asyncio.timeout(self.io_timeout):
                await self._read_replies(conn, pending)
        except BaseException as exc:  # the connection broke mid-batch: never reuse it half-read
            await conn.disconnect()
            _fail(pending, exc if isinstance(exc, Exception) else ConnectionError("redis pipeline cancelled"))
            if not isinstance(exc, Exception):
                raise
        finally:
            await pool.release(conn)

    @staticmethod
    async def _read_replies(conn: Any, pending: list[_Waiter]) -> None:
        while pending:
            _, future = pending[0]
            try:
                reply: Any = await conn.read_response(timeout=math.inf)
            except ResponseError as exc:  # this command's error (e.g. NOSCRIPT); the stream is intact
                reply = exc
            pending.pop(0)
            if future.done():
                continue
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def aclose(self) -> None:
        """Wait briefly for batches in flight (shutdown), then forget them."""
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=self.timeout)


def _pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings. Arguments are bytes, str, int or float."""
    out = b"*%d\r\n" % len(args)
    for arg in args:
        data = arg if type(arg) is bytes else str(arg).encode()
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    return out


_SHAS: dict[str, str] = {}


def _script_sha(script: str) -> str:
    sha = _SHAS.get(script)
    if sha is None:
        sha = _SHAS[script] = sha1(script.encode(), usedforsecurity=False).hexdigest()
    return sha


def _fail(batch: Sequence[_Waiter], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


def _expire(batch: Sequence[_Waiter]) -> None:
    _fail(batch, TimeoutError("redis reply not received within the timeout"))
