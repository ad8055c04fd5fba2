"""UUIDv7s (`core.ids`): the RFC 9562 layout, strictly increasing within a call and across
calls, unique, stamped with the current millisecond."""

from __future__ import annotations

import itertools
import time
import uuid

from core.ids import uuid7, uuid7s


def test_uuid7s_are_version_7_variant_rfc_and_increasing() -> None:
    before = time.time_ns() // 1_000_000
    ids = uuid7s(10_000) + uuid7s(3) + [uuid7()]
    assert all(isinstance(u, uuid.UUID) and u.version == 7 for u in ids)
    assert all(u.variant == uuid.RFC_4122 for u in ids)
    assert all(a.int < b.int for a, b in itertools.pairwise(ids))
    assert len({u.int for u in ids}) == len(ids)
    assert [str(u) for u in ids] == sorted(str(u) for u in ids)  # text sorts as the ids do
    # The timestamp is the clock's millisecond, run ahead by at most one per 4,096 ids.
    stamps = [u.int >> 80 for u in ids]
    assert before <= stamps[0] and stamps[-1] <= time.time_ns() // 1_000_000 + 4
    # They are real UUIDs: equal to the same value parsed, hashable, printable.
    assert uuid.UUID(str(ids[0])) == ids[0] and hash(ids[0]) == hash(uuid.UUID(int=ids[0].int))
