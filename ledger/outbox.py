"""The transactional outbox: events of the ledger's movements for partners' webhooks.

An event row is written in the same statement as the movement (a CTE of it: the group
commit's, `ledger.batch`; the single earn's and a bonus's, `ledger.earn`; an authorization's,
a capture's, a void's, `ledger.holds`; the statement recording a refund, `partners.refunds`) or
in its transaction (a settlement's close, `settlement.closing`: one INSERT ... SELECT more), so
no event is lost or invented by a rollback; only for a partner that has a live webhook for its
type (`webhook_wanted()`, migration 0020), so a partner without webhooks pays one index probe.
A trigger fans each event out to the partner's webhooks (`webhook_deliveries`), which the
dispatcher delivers (`partners.webhooks`).

A partner receives only its own events: those of its earns, refunds, holds, bonuses and
statements. The operator's bonuses (sign-up, referral: no issuer) are no partner's, so they
have no event. A hold that expires unused (released by the ledger, not by the partner) has
none either.

The `data` of each type (ids as strings, times ISO 8601, Money as `{"amount": "<decimal
string>", "currency": "<ISO 4217>"}` as in the GraphQL API):

- `earn.recorded`: transactionId, memberId, orderRef, points, amount (Money or null), category,
  effectiveAt, availableAt, expiresAt.
- `refund.recorded`, one per refund of an order (the `refund` mutation, whatever it moved):
  refundId, memberId, orderRef, amount (Money: the amount refunded), pointsReversed,
  pointsReturned, reversalTransactionId, returnTransactionId (null when no points moved that
  way), effectiveAt.
- `redemption.authorized`: holdId, memberId, orderRef, points, purchaseAmount (Money or null),
  expiresAt, effectiveAt.
- `redemption.captured`: holdId, transactionId, memberId, orderRef, points (captured), released
  (the rest of the hold, back to the member), effectiveAt.
- `redemption.voided`: holdId, memberId, orderRef, released (the hold's points), effectiveAt.
- `bonus.awarded` (a partner's own bonus, funded by it): transactionId, memberId, points,
  reason, ref, effectiveAt, expiresAt.
- `settlement.closed`, to every partner with a statement in the period (no member): periodId,
  periodStart, periodEnd, closedAt, and its statement's totals: issuedPoints, reversedPoints,
  redeemedPoints, returnedPoints, issuanceCharge, reimbursement, net (Money in the settlement
  currency; net > 0: the operator pays the partner).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text

EVENT_TYPES = (
    "earn.recorded",
    "refund.recorded",
    "redemption.authorized",
    "redemption.captured",
    "redemption.voided",
    "bonus.awarded",
    "settlement.closed",
)

# An earn's event data, over a row `w` with the group commit's columns (tx, member, ref, points,
# amount, currency, category, at, available_at, expires_at): one expression for both paths.
EARN_DATA = """jsonb_build_object(
    'transactionId', w.tx, 'memberId', w.member, 'orderRef', w.ref, 'points', w.points,
    'amount', CASE WHEN w.amount IS NULL THEN NULL
                   ELSE jsonb_build_object('amount', CAST(w.amount AS text), 'currency', w.currency)
              END,
    'category', w.category, 'effectiveAt', w.at, 'availableAt', w.available_at,
    'expiresAt', w.expires_at)"""

# The single path's `earn.recorded` event, a CTE of the earn's own statement (`ledger.earn`).
EARN_EVENT_CTE = f"""
        , ob AS (
            INSERT INTO outbox_events (partner_id, member_id, type, data, created_at)
            SELECT w.partner, w.member, 'earn.recorded', {EARN_DATA}, w.at
            FROM (SELECT CAST(:tx AS uuid) AS tx, CAST(:partner AS uuid) AS partner,
                         CAST(:member AS uuid) AS member, CAST(:ref AS text) AS ref,
                         CAST(:points AS bigint) AS points, CAST(:amount AS numeric) AS amount,
                         CAST(:currency AS text) AS currency, CAST(:category AS text) AS category,
                         CAST(:at AS timestamptz) AS at,
                         CAST(:available_at AS timestamptz) AS available_at,
                         CAST(:expires_at AS timestamptz) AS expires_at) w
            WHERE webhook_wanted(w.partner, 'earn.recorded')
        )"""

# A Money in an event's data from bound parameters (null when the amount is).
_MONEY = """CASE WHEN CAST(:{amount} AS numeric) IS NULL THEN NULL
                 ELSE jsonb_build_object('amount', CAST(CAST(:{amount} AS numeric) AS text),
                                         'currency', CAST(:{currency} AS text))
            END"""

_INSERT = "INSERT INTO outbox_events (partner_id, member_id, type, data, created_at)"

# `redemption.authorized`, a CTE of the authorization's statement (`ledger.holds`): written
# only when the hold is (`h`, empty when the points were not there).
AUTHORIZED_EVENT_CTE = f"""
        , ob AS (
            {_INSERT}
            SELECT CAST(:partner AS uuid), CAST(:member AS uuid), 'redemption.authorized',
                   jsonb_build_object(
                       'holdId', h.id, 'memberId', CAST(:member AS uuid),
                       'orderRef', CAST(:ref AS text), 'points', CAST(:points AS bigint),
                       'purchaseAmount', {_MONEY.format(amount="amount", currency="currency")},
                       'expiresAt', CAST(:expires_at AS timestamptz),
                       'effectiveAt', CAST(:at AS timestamptz)),
                   CAST(:at AS timestamptz)
            FROM h WHERE webhook_wanted(CAST(:partner AS uuid), 'redemption.authorized')
        )"""

# `redemption.captured`, a CTE of the capture's statement (`ledger.holds`).
CAPTURED_EVENT_CTE = f"""
        , ob AS (
            {_INSERT}
            SELECT CAST(:partner AS uuid), CAST(:member AS uuid), 'redemption.captured',
                   jsonb_build_object(
                       'holdId', CAST(:hold AS uuid), 'transactionId', CAST(:tx AS uuid),
                       'memberId', CAST(:member AS uuid), 'orderRef', CAST(:ref AS text),
                       'points', CAST(:points AS bigint), 'released', CAST(:released AS bigint),
                       'effectiveAt', CAST(:at AS timestamptz)),
                   CAST(:at AS timestamptz)
            WHERE webhook_wanted(CAST(:partner AS uuid), 'redemption.captured')
        )"""

# `redemption.voided`, a CTE of the void's statement (`ledger.holds`).
VOIDED_EVENT_CTE = f"""
        , ob AS (
            {_INSERT}
            SELECT CAST(:partner AS uuid), CAST(:member AS uuid), 'redemption.voided',
                   jsonb_build_object(
                       'holdId', CAST(:hold AS uuid), 'memberId', CAST(:member AS uuid),
                       'orderRef', CAST(:ref AS text), 'released', CAST(:released AS bigint),
                       'effectiveAt', CAST(:at AS timestamptz)),
                   CAST(:at AS timestamptz)
            WHERE webhook_wanted(CAST(:partner AS uuid), 'redemption.voided')
        )"""

# `bonus.awarded`, a CTE of the bonus's statement (`ledger.earn._earn_statement`, kind bonus).
# An operator's bonus names no partner (`:partner` NULL): `webhook_wanted` is false, no event.
BONUS_EVENT_CTE = f"""
        , ob AS (
            {_INSERT}
            SELECT CAST(:partner AS uuid), CAST(:member AS uuid), 'bonus.awarded',
                   jsonb_build_object(
                       'transactionId', CAST(:tx AS uuid), 'memberId', CAST(:member AS uuid),
                       'points', CAST(:points AS bigint), 'reason', CAST(:category AS text),
                       'ref', CAST(:ref AS text), 'effectiveAt', CAST(:at AS timestamptz),
                       'expiresAt', CAST(:expires_at AS timestamptz)),
                   CAST(:at AS timestamptz)
            WHERE webhook_wanted(CAST(:partner AS uuid), 'bonus.awarded')
        )"""

# `refund.recorded`, the leading CTE of the statement that records the refund
# (`partners.refunds`: `:id`, `:p`, `:ref`, `:amt`, `:cur`, `:rev`, `:ret`, `:rtx`, `:ttx`,
# `:at`). Its member is the order's: its earn's, else its first hold's.
REFUND_EVENT_CTE = f"""
        WITH ob AS (
            {_INSERT}
            SELECT CAST(:p AS uuid), o.member, 'refund.recorded',
                   jsonb_build_object(
                       'refundId', CAST(:id AS uuid), 'memberId', o.member,
                       'orderRef', CAST(:ref AS text),
                       'amount', {_MONEY.format(amount="amt", currency="cur")},
                       'pointsReversed', CAST(:rev AS bigint),
                       'pointsReturned', CAST(:ret AS bigint),
                       'reversalTransactionId', CAST(:rtx AS uuid),
                       'returnTransactionId', CAST(:ttx AS uuid),
                       'effectiveAt', CAST(:at AS timestamptz)),
                   CAST(:at AS timestamptz)
            FROM (SELECT coalesce(
                      (SELECT t.member_id FROM transactions t
                       WHERE t.kind = 'earn' AND t.partner_id = :p AND t.ref = :ref LIMIT 1),
                      (SELECT h.member_id FROM holds h
                       WHERE h.partner_id = :p AND h.order_ref = :ref
                       ORDER BY h.created_at LIMIT 1)) AS member) o
            WHERE webhook_wanted(CAST(:p AS uuid), 'refund.recorded')
        )"""


_EVENT = text(
    """
    INSERT INTO outbox_events (partner_id, member_id, type, data, created_at)
    SELECT :partner, :member, :type, CAST(:data AS jsonb), :at
    WHERE webhook_wanted(:partner, :type)
    """
)


async def record(
    conn: Any,
    *,
    partner_id: uuid.UUID,
    member_id: uuid.UUID | None,
    type: str,
    data: dict[str, Any],
    at: datetime,
) -> None:
    """An event of `type` for `partner_id`'s webhooks, in the caller's transaction."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    await conn.execute(
        _EVENT,
        {
            "partner": partner_id,
            "member": member_id,
            "type": type,
            "data": orjson.dumps(data).decode(),
            "at": at,
        },
    )


_EVENTS = text(
    f"""
    {_INSERT}
    SELECT e.partner, e.member, CAST(:type AS text), e.data, CAST(:at AS timestamptz)
    FROM jsonb_to_recordset(CAST(:events AS jsonb)) AS e(n int, partner uuid, member uuid,
                                                         data jsonb)
    WHERE webhook_wanted(e.partner, CAST(:type AS text))
    ORDER BY e.n
    """
)


async def record_many(
    conn: Any,
    *,
    type: str,
    events: list[tuple[uuid.UUID, uuid.UUID | None, dict[str, Any]]],
    at: datetime,
) -> None:
    """Events of `type`, each (partner id, member id, data), in the caller's transaction and
    one statement: only those whose partner has a live webhook for the type are written."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    if not events:
        return
    rows = [
        {
            "n": n,
            "partner": str(partner),
            "member": None if member is None else str(member),
            "data": data,
        }
        for n, (partner, member, data) in enumerate(events)
    ]
    await conn.execute(_EVENTS, {"type": type, "events": orjson.dumps(rows).decode(), "at": at})
