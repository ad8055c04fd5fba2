"""operator users: the operator's staff sign in to the console with a password

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-16 08:00:00.000000

`operator_users` (email unique case-insensitively, argon2 password hash, disabled_at). The
public client `coalition-console` (kind `console`: no secret, PKCE, scope `operator`, redirect
URI `/console/callback` relative to PUBLIC_URL) signs them in on the members' login page; its
authorization codes and refresh tokens name an operator user instead of a member, so the two
tables take an `operator_user_id` and exactly one of the two subjects.

Also `ix_transactions_expiry` (partial on `kind = 'expiry'`): the console's health page reads
the latest expiry run without walking the earns.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUBJECT_TABLES = (
    ("oauth_authorization_codes", "ck_oauth_codes_subject", "ix_oauth_codes_operator_user"),
    ("oauth_refresh_tokens", "ck_oauth_refresh_subject", "ix_oauth_refresh_operator_user"),
)


def upgrade() -> None:
    op.create_table(
        "operator_users",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_operator_users_email_lower", "operator_users", [sa.text("lower(email)")], unique=True
    )
    op.drop_constraint("ck_oauth_clients_kind", "oauth_clients", type_="check")
    op.drop_constraint("ck_oauth_clients_public_no_secret", "oauth_clients", type_="check")
    op.create_check_constraint(
        "ck_oauth_clients_kind", "oauth_clients", "kind IN ('partner','operator','app','console')"
    )
    op.create_check_constraint(
        "ck_oauth_clients_public_no_secret",
        "oauth_clients",
        "(kind IN ('app','console')) = (secret_hash IS NULL)",
    )
    for name, check, index in _SUBJECT_TABLES:
        op.add_column(name, sa.Column("operator_user_id", sa.UUID(), nullable=True))
        op.create_foreign_key(
            f"{name}_operator_user_id_fkey", name, "operator_users", ["operator_user_id"], ["id"]
        )
        op.alter_column(name, "member_id", existing_type=sa.UUID(), nullable=True)
        op.create_check_constraint(check, name, "num_nonnulls(member_id, operator_user_id) = 1")
        op.create_index(
            index,
            name,
            ["operator_user_id"],
            unique=False,
            postgresql_where=sa.text("operator_user_id IS NOT NULL"),
        )
    op.create_index(
        "ix_transactions_expiry",
        "transactions",
        ["effective_at"],
        unique=False,
        postgresql_where=sa.text("kind = 'expiry'"),
    )
    op.execute(
        "INSERT INTO oauth_clients (client_id, kind, name, scopes, redirect_uris) "
        "VALUES ('coalition-console', 'console', 'Coalition console', ARRAY['operator'], "
        "ARRAY['/console/callback'])"
    )


def downgrade() -> None:
    op.drop_index(
        "ix_transactions_expiry",
        table_name="transactions",
        postgresql_where=sa.text("kind = 'expiry'"),
    )
    for name, check, index in _SUBJECT_TABLES:
        op.execute(f"DELETE FROM {name} WHERE operator_user_id IS NOT NULL")
        op.drop_index(index, table_name=name)
        op.drop_constraint(check, name, type_="check")
        op.alter_column(name, "member_id", existing_type=sa.UUID(), nullable=False)
        op.drop_constraint(f"{name}_operator_user_id_fkey", name, type_="foreignkey")
        op.drop_column(name, "operator_user_id")
    op.execute("DELETE FROM oauth_clients WHERE kind = 'console'")
    op.drop_constraint("ck_oauth_clients_public_no_secret", "oauth_clients", type_="check")
    op.drop_constraint("ck_oauth_clients_kind", "oauth_clients", type_="check")
    op.create_check_constraint(
        "ck_oauth_clients_public_no_secret",
        "oauth_clients",
        "(kind = 'app') = (secret_hash IS NULL)",
    )
    op.create_check_constraint(
        "ck_oauth_clients_kind", "oauth_clients", "kind IN ('partner','operator','app')"
    )
    op.drop_index("uq_operator_users_email_lower", table_name="operator_users")
    op.drop_table("operator_users")
