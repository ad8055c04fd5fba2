"""Bonuses and referrals: bonus rules, members' referral codes, referrals

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 12:00:00.000000

- `bonus_rules`: the operator's sign-up and referral points, insert-only (the latest row is in
  force; none: no bonuses).
- `members.referral_code`: every member's code for friends (8 symbols of Crockford's base 32,
  unique); members who exist get a random one here.
- `referrals`: who joined with whose code, the points each side was promised, and when (and by
  which ledger transactions) the bonus was paid.
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# members.referrals.ALPHABET and CODE_LENGTH (copied: a migration does not follow the code).
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8
BATCH = 10_000


def _codes_for_existing_members() -> None:
    bind = op.get_bind()
    ids = [row[0] for row in bind.execute(sa.text("SELECT id FROM members ORDER BY id"))]
    drawn: set[str] = set()
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        codes: list[str] = []
        while len(codes) < len(chunk):
            code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
            while code in drawn:  # the unique constraint comes after: no collision allowed
                code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
            drawn.add(code)
            codes.append(code)
        bind.execute(
            sa.text(
                "UPDATE members m SET referral_code = v.code "
                "FROM unnest(CAST(:ids AS uuid[]), CAST(:codes AS text[])) AS v(id, code) "
                "WHERE m.id = v.id"
            ),
            {"ids": chunk, "codes": codes},
        )


def upgrade() -> None:
    op.create_table(
        "bonus_rules",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("signup_points", sa.BigInteger(), nullable=False),
        sa.Column("referral_points", sa.BigInteger(), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.CheckConstraint("signup_points >= 0", name="ck_bonus_rules_signup"),
        sa.CheckConstraint("referral_points >= 0", name="ck_bonus_rules_referral"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.add_column("members", sa.Column("referral_code", sa.Text(), nullable=True))
    _codes_for_existing_members()
    op.alter_column("members", "referral_code", nullable=False)
    op.create_unique_constraint("members_referral_code_key", "members", ["referral_code"])
    op.create_check_constraint(
        "ck_members_referral_code", "members", "referral_code ~ '^[0-9A-HJKMNP-TV-Z]{8}$'"
    )
    op.create_table(
        "referrals",
        sa.Column("friend_id", sa.UUID(), nullable=False),
        sa.Column("referrer_id", sa.UUID(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("referrer_tx_id", sa.UUID(), nullable=True),
        sa.Column("friend_tx_id", sa.UUID(), nullable=True),
        sa.CheckConstraint("points >= 0", name="ck_referrals_points"),
        sa.CheckConstraint("referrer_id <> friend_id", name="ck_referrals_not_self"),
        sa.ForeignKeyConstraint(["friend_id"], ["members.id"]),
        sa.ForeignKeyConstraint(["referrer_id"], ["members.id"]),
        sa.PrimaryKeyConstraint("friend_id"),
    )
    op.create_index(
        "ix_referrals_unpaid",
        "referrals",
        ["friend_id"],
        unique=False,
        postgresql_where=sa.text("paid_at IS NULL AND points > 0"),
    )
    op.create_index("ix_referrals_referrer", "referrals", ["referrer_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_referrals_referrer", table_name="referrals")
    op.drop_index(
        "ix_referrals_unpaid",
        table_name="referrals",
        postgresql_where=sa.text("paid_at IS NULL AND points > 0"),
    )
    op.drop_table("referrals")
    op.drop_constraint("ck_members_referral_code", "members", type_="check")
    op.drop_constraint("members_referral_code_key", "members", type_="unique")
    op.drop_column("members", "referral_code")
    op.drop_table("bonus_rules")
