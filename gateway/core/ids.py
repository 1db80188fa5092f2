"""Decision ids: short, unique, roughly time-ordered, safe in headers and logs."""

from __future__ import annotations

import base64
import os
import time

__all__ = ["new_decision_id"]

_ENTROPY_BATCH = 9 * 1024
_entropy = b""
_offset = _ENTROPY_BATCH


def new_decision_id() -> str:
    """48 bits of milliseconds followed by 72 random bits, base32 (24 chars, lower case).

    Time-ordered so that logs sort naturally; random enough that ids cannot be guessed to probe
    other people's decisions (appeals look decisions up by id). The random bits come from
    os.urandom in batches: one getrandom syscall per 1024 ids instead of one per request."""
    global _entropy, _offset
    if _offset >= _ENTROPY_BATCH:
        _entropy, _offset = os.urandom(_ENTROPY_BATCH), 0
    random = _entropy[_offset : _offset + 9]
    _offset += 9
    ms = time.time_ns() // 1_000_000
    return base64.b32encode(ms.to_bytes(6, "big") + random).decode("ascii").lower()
