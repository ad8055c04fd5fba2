"""Time-ordered UUIDs (RFC 9562 version 7) for public identifiers.

They sort by creation time (index-friendly, like a sequence) yet reveal no volumes to
partners. Python 3.11 has no uuid7, PostgreSQL 15 has no uuidv7(); this is the RFC layout.
"""

from __future__ import annotations

import os
import time
import uuid

_last = 0
_counter = 0


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48-bit unix milliseconds, then a monotonic counter and random bits."""
    return uuid7s(1)[0]


_new = object.__new__
_set = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


def uuid7s(n: int) -> list[uuid.UUID]:
    """`n` new UUIDv7s in creation order, their random bits read in one call (a batch of
    earns: one `os.urandom` per id was a tenth of an import's CPU) and the clock read once:
    the ids of one call share its millisecond, the 12-bit counter orders them (past 4,096 the
    millisecond moves on ahead of the clock, as when the clock goes back)."""
    global _last, _counter
    random = os.urandom(8 * n)
    now = time.time_ns() // 1_000_000
    out = []
    for i in range(n):
        if now <= _last:
            # Same millisecond (or clock went back): keep ordering with a 12-bit counter.
            _counter += 1
            if _counter > 0xFFF:
                _last += 1
                _counter = 0
        else:
            _last, _counter = now, 0
        rand = int.from_bytes(random[8 * i : 8 * i + 8], "big")
        value = (
            (_last & 0xFFFFFFFFFFFF) << 80
            | 0x7 << 76
            | (_counter & 0xFFF) << 64
            | 0b10 << 62
            | rand & 0x3FFFFFFFFFFFFFFF
        )
        # uuid.UUID(int=value) without its argument checks: the value is built right here.
        u = _new(uuid.UUID)
        _set(u, "int", value)
        _set(u, "is_safe", _UNKNOWN)
        out.append(u)
    return out
