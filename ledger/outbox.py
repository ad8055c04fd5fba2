"""The transactional outbox: events of the ledger's movements for partners' webhooks.

An event row is written in the same statement (the group commit's, `ledger.batch`) or the same
transaction (the single path, other movements) as the movement, so no event is lost or invented
by a rollback; only for a partner that has a live webhook for its type (`webhook_wanted()`,
migration 0020), so a partner without webhooks pays one index probe. A trigger fans each event
out to the partner's webhooks (`webhook_deliveries`), which the dispatcher delivers
(`partners.webhooks`).
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

_EVENT = text(
    f"""
    INSERT INTO outbox_events (partner_id, member_id, type, data, created_at)
    SELECT w.partner, w.member, 'earn.recorded', {EARN_DATA}, w.at
    FROM (SELECT CAST(:tx AS uuid) AS tx, CAST(:partner AS uuid) AS partner,
                 CAST(:member AS uuid) AS member, CAST(:ref AS text) AS ref,
                 CAST(:points AS bigint) AS points, CAST(:amount AS numeric) AS amount,
                 CAST(:currency AS text) AS currency, CAST(:category AS text) AS category,
                 CAST(:at AS timestamptz) AS at, CAST(:available_at AS timestamptz) AS available_at,
                 CAST(:expires_at AS timestamptz) AS expires_at) w
    WHERE webhook_wanted(w.partner, 'earn.recorded')
    """
)

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
