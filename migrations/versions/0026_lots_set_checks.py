"""ledger: the foreign keys of `lots` checked per statement, not per row; the entries' accounts
once each

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-19 08:00:00.000000

The four foreign keys of `lots` (its earn and its transfer transaction, its wallet, its origin
lot) ran one referential-integrity query per lot and per key, each taking a KEY SHARE lock on
the row it found: a batch file's chunk of 10,000 earns ran 20,000 of them, and locked every
transaction it had just written a second time.

The same guarantee now comes from the statement-level trigger `lots_references`, as 0006 did for
`entries`: one set-based query per INSERT statement refuses lots whose transactions, wallet or
origin lot do not exist (SQLSTATE 23503, `foreign_key_violation`, as the keys raised). What a
foreign key also prevents cannot happen: deleting a referenced row (`transactions` is insert-only
since 0001, `accounts` permanent since 0006, and `lots` now refuses DELETE and TRUNCATE), or
changing a lot's references (`lots_references_fixed`: an UPDATE naming those columns is refused;
the ledger only ever updates `remaining` and `reversed`).

The entries' check (`ledger_entries_after_insert`, 0006) looks each account up once per
statement, not once per transaction naming it: a chunk's 20,000 entries name about as many
accounts as it has members.

Measured (`python -m bench.import_statement --chunks 8 --no-stages`, server CPU per earn, one
connection, chunks of 10,000): 76 -> 69 us (the lots), then 1-2 us less (the entries).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEYS = (
    ("lots_earn_tx_id_fkey", "transactions", "earn_tx_id"),
    ("lots_transfer_tx_id_fkey", "transactions", "transfer_tx_id"),
    ("lots_wallet_id_fkey", "accounts", "wallet_id"),
    ("lots_origin_lot_id_fkey", "lots", "origin_lot_id"),
)

_CHECKS = """
CREATE FUNCTION ledger_lots_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  bad text;
BEGIN
  SELECT what INTO bad FROM (
    SELECT 'earn transaction ' || n.id AS what
      FROM (SELECT DISTINCT earn_tx_id AS id FROM new_lots) n
     WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.id = n.id)
    UNION ALL
    SELECT 'transfer transaction ' || n.id
      FROM (SELECT DISTINCT transfer_tx_id AS id FROM new_lots WHERE transfer_tx_id IS NOT NULL) n
     WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.id = n.id)
    UNION ALL
    SELECT 'wallet ' || n.id
      FROM (SELECT DISTINCT wallet_id AS id FROM new_lots) n
     WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = n.id)
    UNION ALL
    SELECT 'origin lot ' || n.id
      FROM (SELECT DISTINCT origin_lot_id AS id FROM new_lots WHERE origin_lot_id IS NOT NULL) n
     WHERE NOT EXISTS (SELECT 1 FROM lots l WHERE l.id = n.id)
  ) x LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'lot names unknown %', bad USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER lots_references AFTER INSERT ON lots REFERENCING NEW TABLE AS new_lots
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_lots_after_insert();

CREATE FUNCTION ledger_lots_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'a lot''s transactions, wallet and origin never change'
    USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER lots_references_fixed
  BEFORE UPDATE OF earn_tx_id, transfer_tx_id, wallet_id, origin_lot_id ON lots
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_lots_fixed();

CREATE FUNCTION ledger_lots_permanent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'lots are permanent: postings, transfers and settlement refer to them'
    USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER lots_permanent BEFORE DELETE OR TRUNCATE ON lots
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_lots_permanent();
"""


# The entries' check as 0006 left it (the downgrade's).
_ENTRIES_V1 = """
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
END
$$;
"""


# The one change: the unknown-account branch reads each account once, not once per
# (transaction, account); the transaction it names is any one naming that account.
_ENTRIES_V2 = _ENTRIES_V1.replace(
    """    SELECT n.transaction_id::text, 'names unknown account ' || n.account_id
      FROM (SELECT DISTINCT transaction_id, account_id FROM new_entries) n""",
    """    SELECT (SELECT e.transaction_id::text FROM new_entries e WHERE e.account_id = n.account_id
             LIMIT 1), 'names unknown account ' || n.account_id
      FROM (SELECT DISTINCT account_id FROM new_entries) n""",
)
assert _ENTRIES_V2 != _ENTRIES_V1


def upgrade() -> None:
    for name, _, _ in _KEYS:
        op.drop_constraint(name, "lots", type_="foreignkey")
    op.execute(_CHECKS)
    op.execute(_ENTRIES_V2)


def downgrade() -> None:
    op.execute(_ENTRIES_V1)
    for trigger, function in (
        ("lots_permanent", "ledger_lots_permanent"),
        ("lots_references_fixed", "ledger_lots_fixed"),
        ("lots_references", "ledger_lots_after_insert"),
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON lots")
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    for name, table, column in _KEYS:
        op.create_foreign_key(name, "lots", table, [column], ["id"])
