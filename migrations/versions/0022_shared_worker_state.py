"""gateway: state shared by the workers of `coalition serve --workers N`

Revision ID: 0022
Revises: 0020
Create Date: 2026-12-05 13:00:00.000000

- `rate_limit_windows` (UNLOGGED): the fixed-window counters of the rate limits, one row per
  limit and caller, upserted by every worker (`gateway.ratelimit.SharedWindows`). Unlogged: a
  crash of PostgreSQL empties it, which only restarts the current windows; no WAL per hit.
- `trg_oauth_revoked_notify`: each revoked access token is announced on the channel
  `oauth_revoked` (at commit), so every worker refuses it at once
  (`gateway.oauth.revocation.RevocationList.listen`).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE UNLOGGED TABLE rate_limit_windows ("
        "  key text PRIMARY KEY,"
        "  hits bigint NOT NULL,"
        "  ends_at timestamptz NOT NULL"
        ") WITH (fillfactor = 70)"  # room for HOT updates: a hot key rewrites its row in place
    )
    op.execute(
        """
        CREATE FUNCTION oauth_revoked_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_notify('oauth_revoked', json_build_object(
            'jti', NEW.jti, 'exp', extract(epoch FROM NEW.expires_at))::text);
          RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER trg_oauth_revoked_notify AFTER INSERT ON oauth_revoked_tokens "
        "FOR EACH ROW EXECUTE FUNCTION oauth_revoked_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER trg_oauth_revoked_notify ON oauth_revoked_tokens")
    op.execute("DROP FUNCTION oauth_revoked_notify()")
    op.execute("DROP TABLE rate_limit_windows")
