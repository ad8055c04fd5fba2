"""Idempotency keys: one key space per partner; earn digests of what the client sent

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 18:00:00.000000

Keys were unique per (actor, operation, key), the actor being the OAuth client: two clients of
one partner had separate key spaces, so a retry through the other client was not a replay. Now
(key_space, operation, key) is unique, `key_space` being `partner:<partner id>` for every client
of a partner (`member:<id>` for a member, `operator` for the operator; see
`ledger.service.partner_key_space`). `actor` stays: the client that claimed the key.

Existing rows move to their client's partner key space, so that a retry after the upgrade still
replays. Where two clients of one partner had used the same key (possible before), the earliest
claim takes the partner's space and the others keep a space of their own
(`partner:<id>/<client id>`): nothing is lost and nothing collides.

The stored digest of an earn made through the API now covers what the partner sent (card
number, amount, currency, category, order reference), not what the server derived (points, hold
days, validity): `ledger.service.earn_request_digest`. Stored earn digests are recomputed the
same way from the earn's transaction (the SQL below and that function must agree), so that a
retry after the upgrade replays. The downgrade recomputes the former digests.
"""

from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _field(expr: str) -> str:
    # ledger.service.client_digest: a value as "<length>:<value>", "-" for none.
    return f"CASE WHEN {expr} IS NULL THEN '-' ELSE length({expr}) || ':' || {expr} END"


_EARN_DIGEST = f"""
UPDATE idempotency_keys k
SET request_hash = encode(sha256(convert_to(concat_ws(',', 'earn',
        {_field("m.card_number")}, {_field("CAST(t.amount AS text)")}, {_field("t.currency")},
        {_field("t.category")}, {_field("t.ref")}), 'UTF8')), 'hex')
FROM transactions t JOIN members m ON m.id = t.member_id
WHERE k.operation = 'earn' AND k.key_space LIKE 'partner:%' AND k.result IS NOT NULL
  AND t.id = CAST(k.result ->> 'transaction_id' AS uuid) AND t.kind = 'earn'
  AND t.amount IS NOT NULL
"""


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("key_space", sa.Text(), nullable=True))
    op.execute(
        """
        UPDATE idempotency_keys k
        SET key_space = CASE c.kind WHEN 'partner' THEN 'partner:' || c.partner_id
                                    WHEN 'operator' THEN 'operator'
                                    ELSE k.actor END
        FROM oauth_clients c WHERE c.client_id = k.actor
        """
    )
    op.execute("UPDATE idempotency_keys SET key_space = actor WHERE key_space IS NULL")
    op.execute(
        """
        UPDATE idempotency_keys k SET key_space = k.key_space || '/' || k.actor
        FROM (SELECT id, row_number() OVER (PARTITION BY key_space, operation, key ORDER BY id)
                  AS n
              FROM idempotency_keys) d
        WHERE d.id = k.id AND d.n > 1
        """
    )
    op.execute(_EARN_DIGEST)
    op.alter_column("idempotency_keys", "key_space", nullable=False)
    op.drop_constraint("uq_idempotency_actor_op_key", "idempotency_keys", type_="unique")
    op.create_unique_constraint(
        "uq_idempotency_space_op_key", "idempotency_keys", ["key_space", "operation", "key"]
    )


def _former_earn_digest(row: sa.Row) -> str:
    """The digest the ledger stored before 0007 (ledger.service.earn_digest then)."""
    import hashlib
    import json

    from core.money import minor_units

    amount = Decimal(row.amount).quantize(Decimal(1).scaleb(-minor_units(row.currency)))
    earned, expires = row.earned_at.astimezone(UTC), row.expires_at.astimezone(UTC)
    payload = {
        "op": "earn",
        "member": str(row.member_id),
        "partner": str(row.partner_id),
        "points": int(row.points),
        "ref": row.ref,
        "amount": str(amount),
        "currency": row.currency,
        "category": row.category,
        "hold_days": (row.available_at - row.earned_at).days,
        "validity_months": (expires.year - earned.year) * 12 + expires.month - earned.month,
    }
    raw = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            """
            SELECT k.id, t.member_id, t.partner_id, t.points, t.ref, t.amount, t.currency,
                   t.category, l.earned_at, l.available_at, l.expires_at
            FROM idempotency_keys k
            JOIN transactions t ON t.id = CAST(k.result ->> 'transaction_id' AS uuid)
            JOIN lots l ON l.earn_tx_id = t.id
            WHERE k.operation = 'earn' AND k.key_space LIKE 'partner:%' AND k.result IS NOT NULL
              AND t.kind = 'earn' AND t.amount IS NOT NULL
            """
        )
    ).all()
    update = sa.text("UPDATE idempotency_keys SET request_hash = :h WHERE id = :id")
    for row in rows:
        bind.execute(update, {"h": _former_earn_digest(row), "id": row.id})
    op.drop_constraint("uq_idempotency_space_op_key", "idempotency_keys", type_="unique")
    op.create_unique_constraint(
        "uq_idempotency_actor_op_key", "idempotency_keys", ["actor", "operation", "key"]
    )
    op.drop_column("idempotency_keys", "key_space")
