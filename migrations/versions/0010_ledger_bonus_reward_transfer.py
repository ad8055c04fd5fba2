"""Ledger: bonuses, rewards and transfers between members

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 10:00:00.000000

- Transaction kinds `bonus` (points given for a non-purchase event: sign-up, referral, a
  partner's review bonus; `category` holds the reason), `reward` (a reward of the catalog paid
  in points at once, no hold: its lot postings are `capture`s, so that the points are
  redeemed at the delivering partner like any capture) and `transfer` (points given by one
  member to another; `member_id` is the sender).
- The operator account `promotions`: it funds the points the operator issues (sign-up and
  referral bonuses, later coalition-wide offers) as a partner's `issuance` account funds that
  partner's; it goes negative.
- `lots.issuer_id` may be NULL: points issued by the operator.
- A transfer gives the receiver new lots carrying the issuer, earn, availability and expiry of
  the lots the points came from (`origin_lot_id`, `transfer_tx_id`); `earn_tx_id` stays the
  original earn or bonus, so a transferred lot is priced at its original issue (settlement's
  breakage joins it). The unique index on `earn_tx_id` covers only the lots an earn or bonus
  created. Lot posting kind `transfer`: -N on the sender's lots, +N on the receiver's.
- Transfers of one sender within a time window are read by the daily limit: a partial index.
- `ledger_lots` (migration 0008) publishes the two new columns; `ledger_events` needs no
  change (it lists every kind). The entries trigger checks no kind: unchanged.

The downgrade refuses while any bonus, reward or transfer exists (their rows would break the
former checks); otherwise it restores the former schema.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TX_KINDS = "'earn','reversal','capture','return','expiry','adjustment'"
_TX_KINDS_NEW = _TX_KINDS + ",'bonus','reward','transfer'"
_ACCOUNT_KINDS = "'wallet','debt','issuance','redemption','breakage','adjustments'"
_ACCOUNT_KINDS_NEW = _ACCOUNT_KINDS + ",'promotions'"
_POSTING_KINDS = "'capture','return','reversal','expiry'"
_POSTING_KINDS_NEW = _POSTING_KINDS + ",'transfer'"

_LEDGER_LOTS = """
    SELECT id, member_id, issuer_id, earn_tx_id, points, remaining, reversed, earned_at,
           available_at, expires_at
    FROM lots
"""
_LEDGER_LOTS_NEW = """
    SELECT id, member_id, issuer_id, earn_tx_id, points, remaining, reversed, earned_at,
           available_at, expires_at, origin_lot_id, transfer_tx_id
    FROM lots
"""


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(name, table, type_="check")
    op.create_check_constraint(name, table, condition)


def upgrade() -> None:
    _replace_check("transactions", "ck_transactions_kind", f"kind IN ({_TX_KINDS_NEW})")
    _replace_check("accounts", "ck_accounts_kind", f"kind IN ({_ACCOUNT_KINDS_NEW})")
    _replace_check("lot_postings", "ck_lot_postings_kind", f"kind IN ({_POSTING_KINDS_NEW})")
    op.execute("INSERT INTO accounts (kind, owner_id, balance) VALUES ('promotions', NULL, NULL)")
    op.create_index(
        "ix_transactions_transfer_sender",
        "transactions",
        ["member_id", "effective_at"],
        postgresql_where=sa.text("kind = 'transfer'"),
    )

    op.alter_column("lots", "issuer_id", nullable=True)
    op.add_column("lots", sa.Column("origin_lot_id", sa.BigInteger(), nullable=True))
    op.add_column("lots", sa.Column("transfer_tx_id", sa.UUID(), nullable=True))
    op.create_foreign_key("lots_origin_lot_id_fkey", "lots", "lots", ["origin_lot_id"], ["id"])
    op.create_foreign_key(
        "lots_transfer_tx_id_fkey", "lots", "transactions", ["transfer_tx_id"], ["id"]
    )
    op.create_check_constraint(
        "ck_lots_transfer", "lots", "(origin_lot_id IS NULL) = (transfer_tx_id IS NULL)"
    )
    op.drop_index("ix_lots_earn_tx", table_name="lots")
    op.create_index(
        "ix_lots_earn_tx",
        "lots",
        ["earn_tx_id"],
        unique=True,
        postgresql_where=sa.text("transfer_tx_id IS NULL"),
    )
    op.execute(f"CREATE OR REPLACE VIEW ledger_lots AS {_LEDGER_LOTS_NEW}")


def downgrade() -> None:
    op.execute(
        """
        DO $$
        BEGIN
          IF EXISTS (SELECT 1 FROM transactions WHERE kind IN ('bonus', 'reward', 'transfer'))
          THEN
            RAISE EXCEPTION 'cannot downgrade below 0010: bonuses, rewards or transfers exist'
              USING ERRCODE = 'restrict_violation';
          END IF;
        END $$;
        """
    )
    # The view names the columns about to go: it goes first, comes back as it was.
    op.execute("DROP VIEW ledger_lots")
    op.execute(f"CREATE VIEW ledger_lots AS {_LEDGER_LOTS}")
    op.drop_index(
        "ix_lots_earn_tx", table_name="lots", postgresql_where=sa.text("transfer_tx_id IS NULL")
    )
    op.create_index("ix_lots_earn_tx", "lots", ["earn_tx_id"], unique=True)
    op.drop_constraint("ck_lots_transfer", "lots", type_="check")
    op.drop_constraint("lots_transfer_tx_id_fkey", "lots", type_="foreignkey")
    op.drop_constraint("lots_origin_lot_id_fkey", "lots", type_="foreignkey")
    op.drop_column("lots", "transfer_tx_id")
    op.drop_column("lots", "origin_lot_id")
    op.alter_column("lots", "issuer_id", nullable=False)
    op.drop_index(
        "ix_transactions_transfer_sender",
        table_name="transactions",
        postgresql_where=sa.text("kind = 'transfer'"),
    )
    # Accounts are permanent (migration 0006); the promotions account has no entries here.
    op.execute("ALTER TABLE accounts DISABLE TRIGGER accounts_permanent")
    op.execute("DELETE FROM accounts WHERE kind = 'promotions'")
    op.execute("ALTER TABLE accounts ENABLE TRIGGER accounts_permanent")
    _replace_check("lot_postings", "ck_lot_postings_kind", f"kind IN ({_POSTING_KINDS})")
    _replace_check("accounts", "ck_accounts_kind", f"kind IN ({_ACCOUNT_KINDS})")
    _replace_check("transactions", "ck_transactions_kind", f"kind IN ({_TX_KINDS})")
