"""The follow-event log: every follow the upstream accepted, in order, bounded.

* ``memory://`` → ``MemoryEventLog``: an in-process ring (``max_len`` newest events).
* ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` → ``RedisEventLog``: one Redis
  Stream, ``XADD ... MAXLEN ~ max_len`` (approximate trimming is O(1) amortized; exact trimming
  would cost a scan per add). The key carries a hash tag (``followers:{events}``), so on a Redis
  Cluster the stream lives on one slot and one ``XRANGE`` reads it in order.

Writing is fail-soft: ``append`` never raises — a Redis error or timeout is counted
(``errors``) and reported as ``False``; losing one event costs the detectors a little evidence,
failing a follow would cost the user the follow. Reading (the batch scan, a stream consumer)
raises ``EventLogError``, because a reader can retry."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import RedisError

from followers.errors import EventFormatError, EventLogError, FollowersConfigError
from followers.events import FollowEvent
from gateway.core.state.base import store_key

__all__ = ["EventLog", "EventLogConsumer", "MemoryEventLog", "RedisEventLog", "event_log_from_url"]

DEFAULT_MAX_LEN = 1_000_000
STREAM_KEY = store_key("followers", "events")  # "followers:{events}"


class EventLog(Protocol):
    """An ordered, bounded log of follow events. Entry ids increase; ``read`` returns entries
    strictly after ``after`` ("0" = from the oldest kept)."""

    errors: int

    async def append(self, event: FollowEvent) -> bool: ...

    async def read(self, after: str = "0", count: int = 1000) -> list[tuple[str, FollowEvent]]: ...

    async def close(self) -> None: ...


_Row = tuple[int, float, str, str, str, str, str, float | None, int | None, int]


class MemoryEventLog:
    """An in-process ring of the newest ``max_len`` events (one worker, tests, the demo).

    Entries are kept as flat tuples of plain values, not ``FollowEvent`` objects: the collector
    stops tracking a tuple of atoms, where a million event objects would be scanned by every
    full garbage collection of the process."""

    def __init__(self, max_len: int = DEFAULT_MAX_LEN) -> None:
        if max_len < 1:
            raise FollowersConfigError("event log max_len must be at least 1")
        self.max_len = max_len
        self._entries: deque[_Row] = deque(maxlen=max_len)
        self._seq = 0
        self.errors = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def append(self, event: FollowEvent) -> bool:
        self._seq += 1
        self._entries.append((self._seq, event.ts, event.actor, event.target, event.action, event.prefix, event.ua,
                              event.actor_created, event.actor_posts, event.challenges))
        return True

    async def read(self, after: str = "0", count: int = 1000) -> list[tuple[str, FollowEvent]]:
        try:
            start = int(after.split("-", 1)[0])
        except ValueError:
            raise EventLogError(f"bad event log id {after!r}") from None
        entries = self._entries
        if not entries:
            return []
        # Ids are consecutive: jump straight to the first entry after `start`.
        first = entries[0][0]
        index = max(0, start - first + 1)
        return [(f"{row[0]}-0", FollowEvent(row[1], row[2], row[3], row[4], row[5], row[6], row[7],  # type: ignore[arg-type]
                                            row[8], row[9]))
                for row in islice(entries, index, index + count)]

    async def close(self) -> None:
        return None


class RedisEventLog:
    """A Redis Stream of follow events. ``url`` is the state URL (``prefix`` and ``timeout_ms``
    options are honoured like ``RedisStore``'s; the default timeout is 50 ms for appends)."""

    def __init__(self, url: str, *, max_len: int = DEFAULT_MAX_LEN, timeout: float = 0.05,
                 client: Any | None = None) -> None:
        if max_len < 1:
            raise FollowersConfigError("event log max_len must be at least 1")
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        prefix = options.pop("prefix", "tsgate:")
        if "{" in prefix or "}" in prefix:
            raise FollowersConfigError("state URL prefix must not contain '{' or '}'")
        if "timeout_ms" in options:
            try:
                timeout = float(options.pop("timeout_ms")) / 1000
            except ValueError:
                raise FollowersConfigError("state URL option timeout_ms must be a number") from None
        if not (timeout > 0 and math.isfinite(timeout)):
            raise FollowersConfigError("event log timeout must be positive")
        options.pop("max_connections", None)
        self._url = urlunsplit(parts._replace(query=urlencode(options)))
        self._reader: Any | None = None
        self.key = prefix + STREAM_KEY
        self.max_len = max_len
        self.errors = 0
        self._client: Any
        self._client_injected = client is not None
        if client is not None:
            self._client = client
        elif parts.scheme.lower() == "redis+cluster":
            nodes = []
            for entry in parts.netloc.rpartition("@")[2].split(","):
                host, _, port = entry.strip().rpartition(":")
                if not host or not port.isdigit():
                    raise FollowersConfigError(f"redis+cluster:// node {entry!r} must be host:port")
                nodes.append(ClusterNode(host.strip("[]"), int(port)))
            self._client = RedisCluster(startup_nodes=nodes, username=parts.username, password=parts.password,
                                        socket_timeout=timeout, socket_connect_timeout=timeout)
        else:
            try:
                self._client = Redis.from_url(urlunsplit(parts._replace(query=urlencode(options))),
                                              socket_timeout=timeout, socket_connect_timeout=timeout)
            except ValueError as exc:
                raise FollowersConfigError(f"invalid state URL for the event log: {exc}") from exc

    async def append(self, event: FollowEvent) -> bool:
        try:
            await self._client.xadd(self.key, event.as_stream_fields(), maxlen=self.max_len, approximate=True)
        except (RedisError, OSError):
            self.errors += 1
            return False
        return True

    async def read(self, after: str = "0", count: int = 1000) -> list[tuple[str, FollowEvent]]:
        try:
            rows = await self._client.xrange(self.key, min=f"({after}" if after != "0" else "-", count=count)
        except (RedisError, OSError) as exc:
            raise EventLogError(f"reading the follow-event stream failed: {type(exc).__name__}: {exc}") from exc
        out: list[tuple[str, FollowEvent]] = []
        for entry_id, fields in rows:
            ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            try:
                out.append((ident, FollowEvent.from_stream_fields(fields)))
            except EventFormatError:
                self.errors += 1  # a foreign or corrupt entry: skip it, keep reading in order
        return out

    async def wait(self, after: str, count: int = 1000, block: float = 0.5) -> list[tuple[str, FollowEvent]]:
        """Like ``read``, but waits up to ``block`` seconds for new entries (``XREAD BLOCK``):
        a consumer sees another gateway's follow about one round trip after its ``XADD``, where
        polling would add up to a whole poll interval — longer than a panel takes to send an
        account's next follow. ``after`` must be an entry id (not "0"). Blocking reads use a
        connection of their own with a timeout longer than ``block`` (the append client's short
        timeout would cut them)."""
        if self._reader is None:
            if self._client_injected or self._url.startswith("redis+cluster"):
                return await self.read(after, count)
            self._reader = Redis.from_url(self._url, socket_timeout=block + 5.0, socket_connect_timeout=5.0)
        try:
            reply: Any = await self._reader.xread({self.key: after}, count=count, block=max(1, int(block * 1000)))
        except (RedisError, OSError) as exc:
            raise EventLogError(f"reading the follow-event stream failed: {type(exc).__name__}: {exc}") from exc
        out: list[tuple[str, FollowEvent]] = []
        for _stream, rows in reply or []:
            for entry_id, fields in rows:
                ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                try:
                    out.append((ident, FollowEvent.from_stream_fields(fields)))
                except EventFormatError:
                    self.errors += 1
        return out

    async def delete(self) -> None:
        """Drop the stream (operators and tests)."""
        try:
            await self._client.delete(self.key)
        except (RedisError, OSError) as exc:
            raise EventLogError(f"deleting the follow-event stream failed: {exc}") from exc

    async def close(self) -> None:
        for client in (self._client, self._reader):
            if client is None:
                continue
            try:
                await client.aclose()
            except (RedisError, OSError):
                pass


def event_log_from_url(url: str, *, max_len: int = DEFAULT_MAX_LEN) -> MemoryEventLog | RedisEventLog:
    """The log that matches the state URL: memory:// in process, redis schemes as a Stream."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryEventLog(max_len)
    if scheme in ("redis", "rediss", "unix", "redis+cluster"):
        return RedisEventLog(url, max_len=max_len)
    raise FollowersConfigError(f"no follow-event log for state URL scheme {scheme!r}")


class EventLogConsumer:
    """Reads the log in order from where it stopped and hands each event to ``handle`` (e.g.
    ``FollowDetection.observe`` plus ``FollowActions.apply``). With several gateway workers on
    redis://, run one consumer so the detectors see every worker's follows."""

    def __init__(self, log: EventLog, handle: Callable[[FollowEvent], Awaitable[None]], *,
                 after: str = "0") -> None:
        self.log = log
        self.handle = handle
        self.position = after

    async def poll(self, count: int = 1000, *, block: float = 0.0) -> int:
        """Process up to ``count`` new events; return how many. With ``block`` > 0, wait up to
        that long for new events: on a log that can block (a Redis Stream) they are handled as
        soon as they are appended; on others an empty read sleeps ``block``."""
        wait = getattr(self.log, "wait", None)
        if block > 0 and wait is not None and self.position != "0":
            batch = await wait(self.position, count, block)
        else:
            batch = await self.log.read(self.position, count)
            if not batch and block > 0:
                await asyncio.sleep(block)
        for ident, event in batch:
            await self.handle(event)
            self.position = ident
        return len(batch)
