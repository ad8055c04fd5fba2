"""Checks, request digests, key spaces and idempotency claims shared by every ledger operation.

A key is claimed first in the transaction, then the member's wallet and debt rows are locked in
id order (the lock order of ledger.service).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import ensure_aware, utcnow
from core.text import UNSTORABLE_TEXT, storable
from ledger.errors import (
    IdempotencyConflict,
    LedgerValidation,
    MemberNotFound,
    PartnerNotFound,
)
from ledger.models import AccountKind

MAX_POINTS = 1_000_000_000  # per movement; beyond this a request is refused as absurd
MAX_KEY_LENGTH = 200


def request_hash(operation: str, payload: dict[str, Any]) -> str:
    """A stable digest of a request, to tell a replay from a different request."""
    raw = json.dumps(
        {"op": operation, **payload}, sort_keys=True, default=str, separators=(",", ":")
    )
    return hashlib.sha256(raw.encode()).hexdigest()


def client_digest(operation: str, *values: str | None) -> str:
    """The digest of what a client sent (never what the server derived from it): each value
    length-prefixed, so that no two requests run together; cheaper than JSON on the earn path.
    Migration 0007 computes the same digest in SQL: keep the two in step."""
    raw = ",".join([operation, *("-" if v is None else f"{len(v)}:{v}" for v in values)])
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def earn_request_digest(
    *, card_number: str, amount: Decimal, currency: str, category: str | None, ref: str
) -> str:
    """An earn request as the partner sent it (the amount at the ledger's scale, 4 places):
    `client_digest("earn", card_number, amount, currency, category, ref)`, written out (it runs
    on every earn and every line of a batch file)."""
    a = f"{amount:.4f}"
    c = "-" if category is None else f"{len(category)}:{category}"
    raw = (
        f"earn,{len(card_number)}:{card_number},{len(a)}:{a},{len(currency)}:{currency},{c},"
        f"{len(ref)}:{ref}"
    )
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def partner_key_space(partner_id: uuid.UUID) -> str:
    """The idempotency key space of a partner: every one of its OAuth clients uses it."""
    return f"partner:{partner_id}"


def member_key_space(member_id: uuid.UUID) -> str:
    """The idempotency key space of a member (whichever app they call through)."""
    return f"member:{member_id}"


OPERATOR_KEY_SPACE = "operator"


def _check_points(points: Any, what: str = "points") -> int:
    if isinstance(points, bool) or not isinstance(points, int):
        raise LedgerValidation(f"{what} must be a whole number")
    if points <= 0:
        raise LedgerValidation(f"{what} must be positive")
    if points > MAX_POINTS:
        raise LedgerValidation(f"{what} must not exceed {MAX_POINTS}")
    return points


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise LedgerValidation(f"idempotency key must be 1..{MAX_KEY_LENGTH} characters")
    _check_text(key, "idempotency key")
    return key


def _check_text(value: str | None, what: str) -> None:
    # Refused here, before any statement: mid-transaction the database would refuse it, and in
    # a group-commit batch it would fail every other earn of the batch (ledger.batch).
    if value is not None and not storable(value):
        raise LedgerValidation(f"{what} {UNSTORABLE_TEXT}")


def _at(at: datetime | None) -> datetime:
    if at is None:
        return utcnow()
    try:
        return ensure_aware(at)
    except ValueError as exc:
        raise LedgerValidation(str(exc)) from None


_REPLAY = text(
    "SELECT request_hash, result FROM idempotency_keys "
    "WHERE key_space = :space AND operation = :op AND key = :key"
)


async def _replay(
    conn: AsyncConnection, space: str, op: str, key: str, digest: str
) -> dict[str, Any]:
    row = (await conn.execute(_REPLAY, {"space": space, "op": op, "key": key})).one()
    return _replayed(row, op, key, digest)


def _replayed(row: Any, op: str, key: str, digest: str) -> dict[str, Any]:
    if row.request_hash != digest:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was already used for a different {op} request"
        )
    return row.result


async def stored_result(
    conn: AsyncConnection, *, key_space: str, operation: str, key: str, digest: str
) -> dict[str, Any] | None:
    """The stored result of an earlier request under this key (None: the key is unused).

    For a request the current rules would refuse: its replay still gets the original result.
    A different request under the key is a conflict."""
    row = (
        await conn.execute(_REPLAY, {"space": key_space, "op": operation, "key": key})
    ).one_or_none()
    if row is None or row.result is None:
        return None
    return _replayed(row, operation, key, digest)


# Claim the key, then (only if claimed: LATERAL makes the lock wait for the claim) lock the
# member's wallet and debt rows in id order. Zero rows: the key exists already -> replay.
_CLAIM_AND_LOCK = text(
    """
    WITH claim AS (
        INSERT INTO idempotency_keys (key_space, actor, operation, key, request_hash)
        VALUES (:space, :actor, :op, :key, :hash)
        ON CONFLICT (key_space, operation, key) DO NOTHING
        RETURNING id
    )
    SELECT claim.id AS claim_id,
           max(a.id) FILTER (WHERE a.kind = 'wallet') AS wallet_id,
           max(a.id) FILTER (WHERE a.kind = 'debt') AS debt_id,
           max(a.balance) FILTER (WHERE a.kind = 'debt') AS debt_balance,
           (SELECT id FROM accounts WHERE kind = :partner_kind AND owner_id = :partner)
               AS partner_account_id
    FROM claim
    LEFT JOIN LATERAL (
        SELECT id, kind, balance FROM accounts
        WHERE owner_id = :member AND kind IN ('wallet', 'debt')
        ORDER BY id
        FOR UPDATE
    ) a ON true
    GROUP BY claim.id
    """
)


@dataclass(frozen=True)
class _Claim:
    claim_id: int
    wallet_id: int
    debt_id: int
    debt: int  # <= 0
    partner_account_id: int | None


async def _claim_and_lock(
    conn: AsyncConnection,
    *,
    actor: str,
    space: str | None,
    op: str,
    key: str,
    digest: str,
    member_id: uuid.UUID,
    partner_id: uuid.UUID | None = None,
    partner_kind: str = AccountKind.ISSUANCE,
) -> _Claim | dict[str, Any]:
    """Claim the idempotency key and lock the member; a dict means: replay this result."""
    space = space or actor
    row = (
        await conn.execute(
            _CLAIM_AND_LOCK,
            {
                "space": space,
                "actor": actor,
                "op": op,
                "key": key,
                "hash": digest,
                "member": member_id,
                "partner": partner_id,
                "partner_kind": partner_kind,
            },
        )
    ).one_or_none()
    if row is None:
        return await _replay(conn, space, op, key, digest)
    if row.wallet_id is None:
        raise MemberNotFound(f"member {member_id} not found")
    if partner_id is not None and row.partner_account_id is None:
        raise PartnerNotFound(f"partner {partner_id} not found")
    return _Claim(
        row.claim_id, row.wallet_id, row.debt_id, row.debt_balance, row.partner_account_id
    )


_STORE_RESULT = "UPDATE idempotency_keys SET result = CAST(:result AS jsonb) WHERE id = :claim"

_CLAIM = text(
    "INSERT INTO idempotency_keys (key_space, actor, operation, key, request_hash) "
    "VALUES (:space, :actor, :op, :key, :hash) "
    "ON CONFLICT (key_space, operation, key) DO NOTHING RETURNING id"
)


async def claim_key(
    conn: AsyncConnection,
    *,
    actor: str,
    operation: str,
    key: str,
    payload: dict[str, Any],
    key_space: str | None = None,
) -> int | dict[str, Any]:
    """Claim an idempotency key for a composite use case (before any other lock).

    Returns the claim id to pass to `store_key_result`, or the stored result of the original
    request (a dict) when this is a replay; a different request under the key is a conflict.
    `payload` is what the client sent, nothing derived from it."""
    _check_key(key)
    digest = request_hash(operation, payload)
    space = key_space or actor
    params = {"space": space, "actor": actor, "op": operation, "key": key, "hash": digest}
    claim_id = (await conn.execute(_CLAIM, params)).scalar_one_or_none()
    if claim_id is None:
        return await _replay(conn, space, operation, key, digest)
    return int(claim_id)


async def store_key_result(conn: AsyncConnection, *, claim_id: int, result: dict[str, Any]) -> None:
    """Record the result that replays of a claimed key will get."""
    await conn.execute(
        text(_STORE_RESULT), {"claim": claim_id, "result": json.dumps(result, default=str)}
    )
