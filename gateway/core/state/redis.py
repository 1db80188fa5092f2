"""The shared state store (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``) on
``redis.asyncio``.

Every operation is one command; the read-modify-write ones are Lua scripts so they are atomic
on the server. The hot-path operations are auto-pipelined (``AutoPipeline``): commands from
concurrent requests share one round trip. Every failure surfaces as ``StoreError`` / ``StoreUnavailableError``: no redis
type leaks past this module."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import ConfigError, StoreError, StoreUnavailableError
from gateway.core.state.autopipe import AutoPipeline

__all__ = ["RedisStore"]

SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster"})
DEFAULT_PREFIX = "tsgate:"
DEFAULT_MAX_CONNECTIONS = 64

# Query options handed on to redis-py. Anything else is refused up front: redis-py would pass an
# unknown option to the connection class and fail with a TypeError on first use, not at startup.
_PASSTHROUGH = frozenset({"db", "client_name"})
_PASSTHROUGH_TLS = frozenset({"ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
                              "ssl_check_hostname"})

# KEYS[1] counter; ARGV[1] amount; ARGV[2] ttl in ms, "0" for none. The TTL is set only when this
# call created the key (checked with EXISTS, which stays right for amount <= 0, unlike "== amount").
_INCR_LUA = """
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

# KEYS[1] sorted set; ARGV[1] cutoff (at - window); ARGV[2] at; ARGV[3] member; ARGV[4] window ms.
# Scores travel as strings computed in Python: Lua would print numbers with only 14 digits.
# Entries at or before the cutoff leave the window, so the count matches window_count's range.
_WINDOW_ADD_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
local count = redis.call('ZCARD', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return count
"""


def _millis(seconds: float, what: str = "ttl") -> int:
    # A non-positive or infinite duration is a caller bug, not a store failure.
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{what} must be a positive number of seconds, got {seconds!r}")
    return max(1, math.ceil(seconds * 1000))  # never round a short TTL down to "no TTL"


def _score(value: float) -> str:
    return repr(float(value))  # shortest exact round-trip form; Redis parses it with strtod


def _glob_escape(text: str) -> str:
    for char in "\\*?[]":
        text = text.replace(char, "\\" + char)
    return text


def _redact(url: str) -> str:
    """The URL with any password replaced, safe for logs and /readyz."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


class RedisStore:
    """A ``StateStore`` on Redis, shared by every worker and gateway pointing at it.

    URL: ``redis://[user:pass@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path.sock`` or
    ``redis+cluster://[user:pass@]host:port,host:port`` (Redis Cluster; the nodes listed are
    only where discovery starts), with optional query options (URL values override the keyword
    arguments):

    * ``prefix=...``: prepended to every key (default ``tsgate:``); must be non-empty and free
      of ``{}`` so that ``store_key``'s hash tag stays the one Redis Cluster hashes on;
    * ``timeout_ms=...``: connect, read and pool-wait timeout (default ``timeout`` = 50 ms);
    * ``max_connections=...``: pool size (default 64; per node on a cluster); callers beyond it
      wait up to the timeout;
    * passed to redis-py: ``db``, ``client_name`` and, for ``rediss``, ``ssl_cert_reqs``,
      ``ssl_ca_certs``, ``ssl_ca_path``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``.

    No retries and no health checks: a slow or absent Redis fails fast with
    ``StoreUnavailableError`` and the guard applies its ``on_error``. ``url`` is the given URL
    with any password redacted. ``clock`` is accepted for symmetry and unused: TTLs are kept by
    the Redis server, and window times are the caller's ``at``.
    """

    def __init__(self, url: str, *, clock: Clock | None = None, timeout: float = 0.05,
                 prefix: str | None = None) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ConfigError(f"RedisStore needs a redis://, rediss:// or unix:// URL, got scheme {scheme!r}")
        try:
            options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
        except ValueError as exc:
            raise ConfigError(f"{scheme}:// URL has a malformed query") from exc

        prefix = options.pop("prefix", prefix if prefix is not None else DEFAULT_PREFIX)
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigError(f"redis prefix {prefix!r} must be non-empty and contain no '{{' or '}}'")
        if "timeout_ms" in options:
            timeout = _positive_number(options.pop("timeout_ms"), "timeout_ms") / 1000
        elif not (timeout > 0 and math.isfinite(timeout)):
            raise ConfigError(f"redis timeout must be a positive number of seconds, got {timeout!r}")
        max_connections = int(_positive_number(options.pop("max_connections", str(DEFAULT_MAX_CONNECTIONS)),
                                               "max_connections", integer=True))
        allowed = _PASSTHROUGH | (_PASSTHROUGH_TLS if scheme == "rediss" else frozenset())
        if scheme == "redis+cluster":
            allowed = frozenset({"client_name"})  # a cluster has no numbered databases
        unknown = sorted(set(options) - allowed)
        if unknown:
            supported = ", ".join(["prefix", "timeout_ms", "max_connections", *sorted(allowed)])
            raise ConfigError(f"{scheme}:// URL has unknown option(s) {unknown}; supported: {supported}")

        self.url = _redact(url)
        self.prefix = prefix
        self.timeout = timeout
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._redis: Any
        if scheme == "redis+cluster":
            self._redis = _cluster_client(parts, options, timeout, max_connections)
        else:
            self._redis = self._single_client(parts, options, timeout, max_connections, scheme)
        # Hot-path commands from concurrent requests share one pipeline (one round trip).
        self._pipe = AutoPipeline(self._redis, timeout=timeout)

    @staticmethod
    def _single_client(parts: Any, options: dict[str, str], timeout: float, max_connections: int,
                       scheme: str) -> Redis:
        redis_url = urlunsplit(parts._replace(query=urlencode(options)))
        try:
            pool = BlockingConnectionPool.from_url(
                redis_url,
                max_connections=max_connections,
                timeout=timeout,  # how long a caller waits for a free pooled connection
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                health_check_interval=0,  # a PING before commands would double the round trips
                retry=Retry(NoBackoff(), 0),  # fail fast; retrying is the guard's on_error decision
            )
        except ValueError as exc:  # redis-py's own option parsing (e.g. db=abc)
            raise ConfigError(f"invalid {scheme}:// URL: {exc}") from exc
        return Redis(connection_pool=pool)

    @property
    def pipeline(self) -> AutoPipeline:
        """The auto-pipeline; its ``commands`` and ``round_trips`` counters are exported as metrics."""
        return self._pipe

    def _key(self, key: str) -> str:
        return self.prefix + key

    @contextmanager
    def _translate(self, operation: str) -> Iterator[None]:
        """Turn every redis/socket failure into a tsgate StoreError, keeping the cause."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:  # OSError covers TimeoutError
            raise StoreUnavailableError(f"redis {operation} failed: {type(exc).__name__}: {exc}") from exc
        except RedisError as exc:
            raise StoreError(f"redis {operation} failed: {type(exc).__name__}: {exc}") from exc

    # -- StateStore ------------------------------------------------------------------------

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        ttl_ms = 0 if ttl is None else _millis(ttl)
        with self._translate("incr"):
            return int(await self._pipe.run_script(_INCR_LUA, [self._key(key)], [amount, ttl_ms]))

    async def get_counter(self, key: str) -> int:
        with self._translate("get_counter"):
            raw = cast(bytes | None, await self._pipe.execute("GET", self._key(key)))
        if raw is None:
            return 0
        try:
            return int(raw)
        except ValueError:
            raise StoreError(f"key {key!r} holds a value that is not an integer") from None

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        ttl_ms = _millis(ttl)
        with self._translate("set_if_absent"):
            return bool(await self._pipe.execute("SET", self._key(key), value, "PX", ttl_ms, "NX"))

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        ttl_ms = None if ttl is None else _millis(ttl)
        with self._translate("set"):
            if ttl_ms is None:
                await self._pipe.execute("SET", self._key(key), value)
            else:
                await self._pipe.execute("SET", self._key(key), value, "PX", ttl_ms)

    async def get(self, key: str) -> bytes | None:
        with self._translate("get"):
            return cast(bytes | None, await self._pipe.execute("GET", self._key(key)))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        # One MGET: one round trip. On Redis Cluster the keys must share a hash tag (store_key).
        if not keys:
            return []
        with self._translate("get_many"):
            return cast(list[bytes | None], await self._pipe.execute("MGET", *[self._key(k) for k in keys]))

    async def delete(self, key: str) -> bool:
        with self._translate("delete"):
            return int(await self._redis.unlink(self._key(key))) > 0

    async def window_add(self, key: str, member: str, at: float, window: float) -> int:
        window_ms = _millis(window, "window")
        args: list[Any] = [_score(at - window), _score(at), member, window_ms]
        with self._translate("window_add"):
            return int(await self._pipe.run_script(_WINDOW_ADD_LUA, [self._key(key)], args))

    async def window_count(self, key: str, at: float, window: float) -> int:
        # Exclusive lower bound "(": an entry exactly `window` old has left the window.
        with self._translate("window_count"):
            return int(await self._pipe.execute("ZCOUNT", self._key(key), f"({_score(at - window)}", "+inf"))

    async def ping(self) -> bool:
        # A readiness probe wants a yes/no answer, not an exception.
        try:
            with self._translate("ping"):
                return bool(await self._redis.ping())
        except StoreError:
            return False

    async def close(self) -> None:
        with self._translate("close"):
            await self._pipe.aclose()
            if isinstance(self._redis, RedisCluster):
                await self._redis.aclose()
            else:
                await self._redis.aclose(close_connection_pool=True)

    # -- operators and tests ---------------------------------------------------------------

    async def clear_prefix(self) -> int:
        """Delete every key under this store's prefix; return how many were deleted.

        Uses SCAN (never KEYS, which blocks the server) and UNLINK in batches."""
        removed = 0
        batch: list[bytes] = []
        with self._translate("clear_prefix"):
            async for name in self._redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000):
                batch.append(name)
                if len(batch) >= 500:
                    removed += int(await self._redis.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(await self._redis.unlink(*batch))
        return removed


def _cluster_client(parts: Any, options: dict[str, str], timeout: float, max_connections: int) -> RedisCluster:
    """A RedisCluster from ``redis+cluster://[user:pass@]h1:p1,h2:p2``: fail fast like the
    single-node client (no retries; the guard's on_error decides)."""
    hosts = parts.netloc.rpartition("@")[2]
    nodes = []
    for entry in hosts.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"redis+cluster:// URL: node {entry!r} must be host:port")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    return RedisCluster(
        startup_nodes=nodes, username=parts.username, password=parts.password,
        max_connections=max_connections, socket_timeout=timeout, socket_connect_timeout=timeout,
        # One retry, so that a MOVED redirect after a resharding is followed; no back-off.
        retry=Retry(NoBackoff(), 1), client_name=options.get("client_name"),
        health_check_interval=0,
    )


def _positive_number(raw: str, name: str, *, integer: bool = False) -> float:
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = 0
    if not (value > 0 and math.isfinite(value)):
        kind = "integer" if integer else "number"
        raise ConfigError(f"redis URL option {name}={raw!r} must be a positive {kind}")
    return value
