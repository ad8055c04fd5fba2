"""partners: batch files (imports) and webhooks through a transactional outbox

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-16 08:00:00.000000

- `imports`, `import_errors`: a partner's batch file, its progress and its rejected lines.
- `outbox_events` (the ledger's): an event written in the same statement or transaction as the
  movement, only when `webhook_wanted(partner, type)` (a live webhook of that partner asks for
  that type); `trg_outbox_fan_out` copies each into `webhook_deliveries`, one per such webhook,
  in the same statement.
- `webhooks`, `webhook_deliveries`: the endpoints and the delivery log.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, **kw)


def upgrade() -> None:
    op.create_table(
        "imports",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("partner_id", UUID(as_uuid=True), sa.ForeignKey("partners.id"), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="queued"),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=True),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("applied", sa.Integer, nullable=False, server_default="0"),
        sa.Column("replayed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rejected", sa.Integer, nullable=False, server_default="0"),
        _ts("created_at", server_default=sa.func.now()),
        _ts("finished_at", nullable=True),
        sa.CheckConstraint("status IN ('queued','running','done')", name="ck_imports_status"),
        sa.CheckConstraint("format IN ('csv','jsonl')", name="ck_imports_format"),
        sa.CheckConstraint("position >= 0 AND position <= lines", name="ck_imports_position"),
    )
    op.create_index("ix_imports_partner", "imports", ["partner_id", "created_at"])
    op.create_index(
        "ix_imports_unfinished",
        "imports",
        ["created_at"],
        postgresql_where=sa.text("status <> 'done'"),
    )
    op.create_table(
        "import_errors",
        sa.Column(
            "import_id",
            UUID(as_uuid=True),
            sa.ForeignKey("imports.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "webhooks",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("partner_id", UUID(as_uuid=True), sa.ForeignKey("partners.id"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("events", ARRAY(sa.Text), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        _ts("created_at", server_default=sa.func.now()),
        _ts("deleted_at", nullable=True),
    )
    op.create_index("ix_webhooks_partner", "webhooks", ["partner_id"])
    op.create_table(
        "outbox_events",
        sa.Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")
        ),
        sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("partner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("member_id", UUID(as_uuid=True), nullable=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("data", JSONB, nullable=False),
        _ts("created_at", server_default=sa.func.now()),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")
        ),
        sa.Column("webhook_id", UUID(as_uuid=True), sa.ForeignKey("webhooks.id"), nullable=False),
        sa.Column("event_id", UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("event_data", JSONB, nullable=False),
        _ts("event_created_at"),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("member_id", UUID(as_uuid=True), nullable=True),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        _ts("next_attempt_at", server_default=sa.func.now()),
        _ts("last_attempt_at", nullable=True),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        _ts("delivered_at", nullable=True),
        _ts("created_at", server_default=sa.func.now()),
        sa.CheckConstraint(
            "status IN ('pending','delivered','failed')", name="ck_webhook_deliveries_status"
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_order",
        "webhook_deliveries",
        ["webhook_id", "member_id", "seq"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_webhook_deliveries_log", "webhook_deliveries", ["webhook_id", "created_at"])
    # Whether an event of `type` for `partner` is wanted by any live webhook: the ledger's
    # statements write outbox rows only then (a partner without webhooks costs a probe).
    op.execute(
        """
        CREATE FUNCTION webhook_wanted(partner uuid, event_type text) RETURNS boolean
        LANGUAGE sql STABLE AS $$
            SELECT EXISTS (SELECT 1 FROM webhooks w
                           WHERE w.partner_id = partner AND w.deleted_at IS NULL
                             AND event_type = ANY (w.events))
        $$
        """
    )
    # The fan-out, set-based and in the writer's statement: one delivery per event and live
    # webhook of its partner that asks for its type, carrying a copy of the event.
    op.execute(
        """
        CREATE FUNCTION outbox_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, event_data,
                                            event_created_at, seq, member_id, next_attempt_at)
            SELECT w.id, n.id, n.type, n.data, n.created_at, n.seq, n.member_id, n.created_at
            FROM new_events n
            JOIN webhooks w ON w.partner_id = n.partner_id AND w.deleted_at IS NULL
                           AND n.type = ANY (w.events)
            ORDER BY n.seq;
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER trg_outbox_fan_out AFTER INSERT ON outbox_events
        REFERENCING NEW TABLE AS new_events
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_fan_out();
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER trg_outbox_fan_out ON outbox_events")
    op.execute("DROP FUNCTION outbox_fan_out()")
    op.execute("DROP FUNCTION webhook_wanted(uuid, text)")
    op.drop_table("webhook_deliveries")
    op.drop_table("outbox_events")
    op.drop_table("webhooks")
    op.drop_table("import_errors")
    op.drop_table("imports")
