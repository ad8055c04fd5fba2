"""Ledger integrity checked per statement, not per row

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 16:30:00.000000

The two foreign keys of `entries` (transaction, account) ran one referential-integrity query per
entry and per key, each taking a KEY SHARE lock on the row it found: for every earn, one on the
partner's issuance account, the row all of that partner's concurrent earns share (a multixact
and a WAL record each time). A group-commit batch of 16 earns ran 64 of them.

The same guarantee now comes from the statement-level trigger `entries_post`, which already
checked that each transaction sums to zero and posted the stored balances: it also refuses, in
the same query, entries whose transaction or account does not exist. What a foreign key also
prevents, deleting a referenced row, cannot happen: `transactions` is insert-only (0001) and
`accounts` now refuses DELETE and TRUNCATE (balances still change).

The balance posting also probes the accounts it posts to by primary key: for small batches the
planner chose a sequential scan of every account.

`ix_entries_effective_at` goes: no query reads entries by effective time (settlement reads
transactions and lot postings; balances and history read entries by account), and every earn
wrote two entries into it.

Measured (server CPU per earn, one connection, batches of 16; bench/RESULTS.md): 106 -> 98 us.
The foreign keys of `lots` stay: a statement trigger replacing them cost as much as they do.
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

_ACCOUNTS_PERMANENT = """
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
    op.drop_index("ix_entries_effective_at", table_name="entries")
    op.execute(_ENTRIES_V2)
    op.execute(_ACCOUNTS_PERMANENT)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS accounts_permanent ON accounts")
    op.execute("DROP FUNCTION IF EXISTS ledger_accounts_permanent()")
    op.execute(_ENTRIES_V1)
    op.create_index("ix_entries_effective_at", "entries", ["effective_at"])
    op.create_foreign_key("entries_account_id_fkey", "entries", "accounts", ["account_id"], ["id"])
    op.create_foreign_key(
        "entries_transaction_id_fkey", "entries", "transactions", ["transaction_id"], ["id"]
    )
