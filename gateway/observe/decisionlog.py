"""One JSON line per decision, written off the event loop.

Records are formatted on the loop (cheap: a small dict to JSON) and handed to a QueueHandler; a
QueueListener thread does the blocking writes to stderr and to the optional JSONL file (with
size-based rotation), so a slow disk or a full pipe never stalls requests."""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import sys
from typing import Any

__all__ = ["DecisionLog"]


class _Raw(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return str(record.msg)


class DecisionLog:
    def __init__(
        self,
        *,
        to_stderr: str = "all",
        path: str | None = None,
        max_bytes: int = 100 << 20,
        backups: int = 5,
    ) -> None:
        self.to_stderr = to_stderr
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        handlers: list[logging.Handler] = []
        self._stderr: logging.Logger | None = None
        self._file: logging.Logger | None = None
        if to_stderr != "none":
            stream = logging.StreamHandler(sys.stderr)
            stream.setFormatter(_Raw())
            handlers.append(stream)
        if path:
            rotating = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
            rotating.setFormatter(_Raw())
            handlers.append(rotating)
        self._handlers = handlers
        self._file_enabled = bool(path)
        # One logger per destination so "non_allow on stderr, everything in the file" works.
        self._listener: logging.handlers.QueueListener | None = None
        if handlers:
            self._listener = logging.handlers.QueueListener(self._queue, *handlers, respect_handler_level=True)
            self._listener.start()
            for handler in handlers:
                handler.setLevel(logging.INFO)
            if to_stderr != "none":
                handlers[0].addFilter(self._stderr_filter)

    def _stderr_filter(self, record: logging.LogRecord) -> bool:
        return self.to_stderr == "all" or getattr(record, "allowed", False) is False

    def wants(self, allowed: bool) -> bool:
        """Whether a record would be written at all (lets callers skip building it)."""
        return self._file_enabled or (self.to_stderr == "all" or (self.to_stderr == "non_allow" and not allowed))

    def write(self, record: dict[str, Any]) -> None:
        if self._listener is None:
            return
        line = json.dumps(record, separators=(",", ":"), default=str)
        entry = logging.LogRecord("tsgate.decision", logging.INFO, "", 0, line, None, None)
        entry.allowed = record.get("decision") == "allow" and not record.get("shadow")
        self._queue.put(entry)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        for handler in self._handlers:
            handler.close()
