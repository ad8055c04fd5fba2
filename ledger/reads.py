"""What the ledger publishes for reading: balances, history, holds, orders, account sums.

Other packages read the ledger through these functions (point lookups) and through the views of
migration 0008 (`ledger_events`, `ledger_lots`, `ledger_lot_postings`, `ledger_lot_holds`: for
set-based SQL such as settlement's; 0010 adds the lots' `origin_lot_id` and `transfer_tx_id`),
never through its tables. Kinds since 0010: transactions `bonus` (partner_id: the issuer, NULL
for the operator; category: the reason), `reward` (partner_id: the delivering partner; its lot
postings are `capture`s), `transfer` (member_id: the sender; not a settlement event); lot
postings `transfer` (-N on the sender's lots; + on the receiver's what its wallet got, the rest
having repaid its debt); lots whose `issuer_id` is NULL (issued by the operator).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import utcnow
from ledger.claims import _at
from ledger.errors import (
    HoldNotFound,
    MemberNotFound,
)
from ledger.models import HoldStatus
from ledger.results import Balance, BreakdownLine


async def account_balance(conn: AsyncConnection, *, kind: str, owner_id: uuid.UUID | None) -> int:
    """The balance of any account, summed from its entries."""
    value = (
        await conn.execute(
            text(
                "SELECT coalesce(sum(e.amount), 0) FROM entries e JOIN accounts a ON a.id = e.account_id "
                "WHERE a.kind = :kind AND a.owner_id IS NOT DISTINCT FROM :owner"
            ),
            {"kind": kind, "owner": owner_id},
        )
    ).scalar_one()
    return int(value)


_BALANCE = text(
    """
    WITH stale AS (
        SELECT a.lot_id, sum(a.points) AS pts
        FROM holds h JOIN hold_allocations a ON a.hold_id = h.id
        WHERE h.member_id = :member AND h.status = 'active' AND h.expires_at <= :at
        GROUP BY a.lot_id
    ), eff AS (
        SELECT l.available_at, l.expires_at, l.remaining + coalesce(stale.pts, 0) AS pts
        FROM lots l LEFT JOIN stale ON stale.lot_id = l.id
        WHERE l.member_id = :member AND (l.remaining > 0 OR stale.pts > 0) AND l.expires_at > :at
    )
    SELECT
        (SELECT balance FROM accounts WHERE kind = 'wallet' AND owner_id = :member) AS wallet,
        (SELECT balance FROM accounts WHERE kind = 'debt' AND owner_id = :member) AS debt,
        coalesce((SELECT sum(pts) FROM eff WHERE available_at <= :at), 0) AS available,
        coalesce((SELECT sum(pts) FROM eff WHERE available_at > :at), 0) AS pending,
        coalesce((SELECT sum(pts) FROM eff WHERE expires_at <= :horizon), 0) AS expiring,
        coalesce((SELECT sum(points) FROM holds
                  WHERE member_id = :member AND status = 'active' AND expires_at > :at), 0)
            AS on_hold
    """
)


async def balance(
    conn: AsyncConnection,
    *,
    member_id: uuid.UUID,
    at: datetime | None = None,
    expiring_within: timedelta = timedelta(days=30),
) -> Balance:
    """A member's available, pending, on-hold and soon-expiring points (one statement)."""
    at = _at(at)
    row = (
        await conn.execute(
            _BALANCE, {"member": member_id, "at": at, "horizon": at + expiring_within}
        )
    ).one()
    if row.wallet is None:
        raise MemberNotFound(f"member {member_id} not found")
    return Balance(
        wallet=int(row.wallet),
        available=int(row.available),
        pending=int(row.pending),
        on_hold=int(row.on_hold),
        expiring=int(row.expiring),
        debt=-int(row.debt),
    )


@dataclass(frozen=True)
class PendingPart:
    """Pending points of a member that become available at the same instant."""

    points: int
    available_at: datetime


# Pending lots hold no reservations (a hold takes available points only): what is left of them
# is the pending balance, part by part.
_PENDING = text(
    """
    SELECT available_at, sum(remaining) AS points
    FROM lots
    WHERE member_id = :member AND remaining > 0 AND available_at > :at AND expires_at > :at
    GROUP BY available_at
    ORDER BY available_at
    LIMIT :limit
    """
)


async def pending_parts(
    conn: AsyncConnection, *, member_id: uuid.UUID, at: datetime | None = None, limit: int = 100
) -> list[PendingPart]:
    """A member's pending points by the instant they become available, soonest first."""
    rows = await conn.execute(
        _PENDING, {"member": member_id, "at": _at(at), "limit": max(1, min(limit, 500))}
    )
    return [PendingPart(points=int(r.points), available_at=r.available_at) for r in rows]


@dataclass(frozen=True)
class HistoryItem:
    """One movement on a member's wallet or debt.

    `kind`: the transaction's kind (earn, bonus, reversal, capture, reward, return, expiry),
    a transfer seen from this member: `transfer_in` (points received) or `transfer_out`
    (points given). `reason`: a bonus's reason ("signup", "referral", a partner's "review").
    `counterparty_id`: the other member of a transfer."""

    entry_id: int
    transaction_id: uuid.UUID
    kind: str
    account: str
    amount: int
    partner_id: uuid.UUID | None
    ref: str | None
    effective_at: datetime
    reason: str | None = None
    counterparty_id: uuid.UUID | None = None


# A transfer's sender is its `member_id`; its receiver owns the other member account it moved.
_HISTORY = text(
    """
    SELECT e.id AS entry_id, t.id AS transaction_id,
           CASE WHEN t.kind <> 'transfer' THEN t.kind
                WHEN t.member_id = :member THEN 'transfer_out' ELSE 'transfer_in' END AS kind,
           a.kind AS account, e.amount, t.partner_id, t.ref, e.effective_at,
           CASE WHEN t.kind = 'bonus' THEN t.category END AS reason,
           CASE WHEN t.kind <> 'transfer' THEN NULL
                WHEN t.member_id <> :member THEN t.member_id
                ELSE (SELECT o.owner_id FROM entries oe JOIN accounts o ON o.id = oe.account_id
                      WHERE oe.transaction_id = t.id AND o.owner_id <> :member
                        AND o.kind IN ('wallet', 'debt')
                      LIMIT 1) END AS counterparty_id
    FROM accounts a
    JOIN entries e ON e.account_id = a.id
    JOIN transactions t ON t.id = e.transaction_id
    WHERE a.owner_id = :member AND a.kind IN ('wallet', 'debt')
      AND (CAST(:before AS bigint) IS NULL OR e.id < :before)
    ORDER BY e.id DESC
    LIMIT :limit
    """
)


async def history(
    conn: AsyncConnection, *, member_id: uuid.UUID, limit: int = 20, before: int | None = None
) -> list[HistoryItem]:
    """A member's movements, newest first, keyset-paginated by entry id."""
    rows = await conn.execute(
        _HISTORY, {"member": member_id, "before": before, "limit": max(1, min(limit, 500))}
    )
    return [HistoryItem(**r._mapping) for r in rows]


@dataclass(frozen=True)
class HoldRecord:
    """A hold as stored."""

    id: uuid.UUID
    member_id: uuid.UUID
    partner_id: uuid.UUID
    points: int
    captured: int
    returned: int
    status: str
    order_ref: str | None
    expires_at: datetime


async def get_hold(conn: AsyncConnection, *, hold_id: uuid.UUID) -> HoldRecord:
    """One hold; an active hold whose time ran out reads as expired."""
    row = (
        await conn.execute(
            text(
                "SELECT id, member_id, partner_id, points, captured, returned, status, order_ref, "
                "expires_at FROM holds WHERE id = :h"
            ),
            {"h": hold_id},
        )
    ).one_or_none()
    if row is None:
        raise HoldNotFound(f"hold {hold_id} not found")
    record = HoldRecord(*row)
    if record.status == HoldStatus.ACTIVE and record.expires_at <= utcnow():
        record = HoldRecord(**{**asdict(record), "status": HoldStatus.EXPIRED})
    return record


@dataclass(frozen=True)
class OrderEarn:
    """The earn of a partner's order: its transaction and the purchase it paid for."""

    id: uuid.UUID
    points: int
    amount: Decimal | None
    currency: str | None


async def order_earn(
    conn: AsyncConnection, *, partner_id: uuid.UUID, order_ref: str
) -> OrderEarn | None:
    """The earn of the partner's order `order_ref` (at most one: the database enforces it)."""
    row = (
        await conn.execute(
            text(
                "SELECT id, points, amount, currency FROM transactions "
                "WHERE partner_id = :p AND ref = :ref AND kind = 'earn'"
            ),
            {"p": partner_id, "ref": order_ref},
        )
    ).one_or_none()
    return None if row is None else OrderEarn(*row)


async def order_members(
    conn: AsyncConnection, *, partner_id: uuid.UUID, order_refs: list[str]
) -> dict[str, uuid.UUID]:
    """The member of each of the partner's orders that has an earn or a captured hold (an
    order is one member's purchase); orders with neither are absent."""
    rows = await conn.execute(
        text(
            "SELECT ref, member_id FROM transactions "
            "WHERE partner_id = :p AND kind = 'earn' AND ref = ANY(CAST(:refs AS text[])) "
            "UNION SELECT order_ref, member_id FROM holds "
            "WHERE partner_id = :p AND status = 'captured' "
            "AND order_ref = ANY(CAST(:refs AS text[]))"
        ),
        {"p": partner_id, "refs": order_refs},
    )
    return {ref: member for ref, member in rows}


@dataclass(frozen=True)
class CapturedHold:
    """A captured hold of a partner's order: the points paid and the purchase they paid for."""

    id: uuid.UUID
    captured: int
    purchase_amount: Decimal | None
    currency: str | None


async def captured_holds(
    conn: AsyncConnection, *, partner_id: uuid.UUID, order_ref: str
) -> list[CapturedHold]:
    """The partner's captured holds for the order `order_ref`, oldest first."""
    rows = await conn.execute(
        text(
            "SELECT id, captured, purchase_amount, currency FROM holds "
            "WHERE partner_id = :p AND order_ref = :ref AND status = 'captured' ORDER BY id"
        ),
        {"p": partner_id, "ref": order_ref},
    )
    return [CapturedHold(*r) for r in rows]


async def members_with_earns(
    conn: AsyncConnection, *, member_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these members have at least one earn recorded (through their wallet and debt
    entries: an earn that only repaid debt has no wallet leg)."""
    if not member_ids:
        return set()
    rows = await conn.execute(
        text(
            """
            SELECT DISTINCT a.owner_id
            FROM accounts a
            WHERE a.kind IN ('wallet', 'debt') AND a.owner_id = ANY(:members)
              AND EXISTS (SELECT 1 FROM entries e JOIN transactions t ON t.id = e.transaction_id
                          WHERE e.account_id = a.id AND t.kind = 'earn')
            """
        ),
        {"members": list(member_ids)},
    )
    return {r[0] for r in rows}


_EARN_LINES = text(
    "SELECT t.id, t.points, b.lines FROM transactions t "
    "LEFT JOIN earn_breakdowns b ON b.transaction_id = t.id "
    "WHERE t.id = ANY(:ids) AND t.kind = 'earn'"
)


async def earn_lines(
    conn: AsyncConnection, *, transaction_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[BreakdownLine, ...]]:
    """The breakdown of each earn of `transaction_ids`, in one statement: its stored lines, or
    one BASE line of its points when it has none (an earn of its BASE line alone stores none).
    Ids that are not earns are absent."""
    if not transaction_ids:
        return {}
    found: dict[uuid.UUID, tuple[BreakdownLine, ...]] = {}
    for row in await conn.execute(_EARN_LINES, {"ids": list(transaction_ids)}):
        if row.lines is None:
            found[row.id] = (BreakdownLine("BASE", row.points),)
        else:
            found[row.id] = tuple(
                BreakdownLine(source, points, None if offer is None else uuid.UUID(offer), funder)
                for source, points, offer, funder in row.lines
            )
    return found


@dataclass(frozen=True)
class ExpiryRun:
    """The latest expiry run: lots expired up to `at`, recorded at `recorded_at`."""

    at: datetime
    recorded_at: datetime
    points: int
    actor: str


async def last_expiry(conn: AsyncConnection) -> ExpiryRun | None:
    """The most recent expiry transaction (one per run that expired anything), if any."""
    row = (
        await conn.execute(
            text(
                "SELECT effective_at, recorded_at, points, actor FROM transactions "
                "WHERE kind = 'expiry' ORDER BY effective_at DESC, recorded_at DESC LIMIT 1"
            )
        )
    ).one_or_none()
    return ExpiryRun(row[0], row[1], int(row[2]), row[3]) if row is not None else None


async def has_dealings(
    conn: AsyncConnection, *, member_id: uuid.UUID, partner_id: uuid.UUID
) -> bool:
    """Whether the ledger holds a transaction between this member and this partner (an earn,
    a bonus, a redemption, a refund...): the members a partner may look up by id."""
    row = await conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM transactions "
            "WHERE member_id = :member AND partner_id = :partner)"
        ),
        {"member": member_id, "partner": partner_id},
    )
    return bool(row.scalar())
