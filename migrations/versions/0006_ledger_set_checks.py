"""Ledger integrity checked per statement, not per row

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 16:30:00.000000

The foreign keys of `entries` (transaction, account) and `lots` (earn transaction, wallet) ran one
referential-integrity query per row and per key, each taking a KEY SHARE row lock (a WAL record
and, on a partner's issuance account shared by concurrent earns, a multixact). A group-commit
batch of 16 earns ran 96 of them; profiled under load they were a sixth of the database's CPU.

The same guarantees now come from the statement-level triggers, set-based, once per statement:

- `entries_post` (already checking that each transaction sums to zero and posting the stored
  balances) also refuses entries whose transaction or account does not exist;
- `lots_check` (new) refuses lots whose earn transaction does not exist or whose wallet is not a
  wallet account;
- what a foreign key also prevents, deleting a referenced row, cannot happen: `transactions` is
  insert-only (0001) and `accounts` now refuses DELETE and TRUNCATE (balances still change).

The balance posting also probes the accounts it posts to by primary key: the planner's cost
model chose a sequential scan of all accounts for small batches.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ENTRIES_V2 = """
CREATE OR REPLACE FUNCTION ledger_entries_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
BEGIN
  SELECT * INTO bad FROM (
    SELECT transaction_id::text AS id, 'does not sum to zero' AS what FROM new_entries
     GROUP BY transaction_id HAVING sum(amount) <> 0
    UNION ALL
    SELECT n.transaction_id::text, 'does not exist'
      FROM (SELECT DISTINCT transaction_id FROM new_entries) n
     WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.id = n.transaction_id)
    UNION ALL
    SELECT n.transaction_id::text, 'names unknown account ' || n.account_id
      FROM (SELECT DISTINCT transaction_id, account_id FROM new_entries) n
     WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = n.account_id)
  ) x LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'ledger transaction % %', bad.id, bad.what USING ERRCODE = 'check_violation';
  END IF;
  -- Only member accounts keep a stored balance (the wallet's CHECK keeps it >= 0); their rows
  -- were locked FOR UPDATE, in id order, by the caller before the entries were written.
  UPDATE accounts a SET balance = a.balance + s.delta
    FROM (SELECT account_id, sum(amount) AS delta FROM new_entries GROUP BY account_id) s
   WHERE a.id = s.account_id AND a.balance IS NOT NULL
     AND a.id = ANY (ARRAY(SELECT account_id FROM new_entries));
  RETURN NULL;
END $$;
"""

_ENTRIES_V1 = """
CREATE OR REPLACE FUNCTION ledger_entries_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  unbalanced uuid;
BEGIN
  SELECT transaction_id INTO unbalanced FROM new_entries
   GROUP BY transaction_id HAVING sum(amount) <> 0 LIMIT 1;
  IF unbalanced IS NOT NULL THEN
    RAISE EXCEPTION 'ledger transaction % does not sum to zero', unbalanced
      USING ERRCODE = 'check_violation';
  END IF;
  UPDATE accounts a SET balance = a.balance + s.delta
    FROM (SELECT account_id, sum(amount) AS delta FROM new_entries GROUP BY account_id) s
   WHERE a.id = s.account_id AND a.balance IS NOT NULL;
  RETURN NULL;
END $$;
"""

_LOTS_CHECK = """
CREATE FUNCTION ledger_lots_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad record;
BEGIN
  SELECT n.id, n.earn_tx_id, n.wallet_id INTO bad FROM new_lots n
   WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.id = n.earn_tx_id)
      OR NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = n.wallet_id AND a.kind = 'wallet')
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'ledger lot of transaction % names an unknown transaction or wallet %',
      bad.earn_tx_id, bad.wallet_id USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER lots_check AFTER INSERT ON lots
  REFERENCING NEW TABLE AS new_lots
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_lots_after_insert();

CREATE FUNCTION ledger_accounts_permanent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'accounts are permanent: the journal refers to them'
    USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER accounts_permanent BEFORE DELETE OR TRUNCATE ON accounts
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_accounts_permanent();
"""


def upgrade() -> None:
    op.drop_constraint("entries_transaction_id_fkey", "entries", type_="foreignkey")
    op.drop_constraint("entries_account_id_fkey", "entries", type_="foreignkey")
    op.drop_constraint("lots_earn_tx_id_fkey", "lots", type_="foreignkey")
    op.drop_constraint("lots_wallet_id_fkey", "lots", type_="foreignkey")
    op.execute(_ENTRIES_V2)
    op.execute(_LOTS_CHECK)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS accounts_permanent ON accounts")
    op.execute("DROP FUNCTION IF EXISTS ledger_accounts_permanent()")
    op.execute("DROP TRIGGER IF EXISTS lots_check ON lots")
    op.execute("DROP FUNCTION IF EXISTS ledger_lots_after_insert()")
    op.execute(_ENTRIES_V1)
    op.create_foreign_key("lots_wallet_id_fkey", "lots", "accounts", ["wallet_id"], ["id"])
    op.create_foreign_key("lots_earn_tx_id_fkey", "lots", "transactions", ["earn_tx_id"], ["id"])
    op.create_foreign_key("entries_account_id_fkey", "entries", "accounts", ["account_id"], ["id"])
    op.create_foreign_key(
        "entries_transaction_id_fkey", "entries", "transactions", ["transaction_id"], ["id"]
    )
