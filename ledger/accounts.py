"""Opening the ledger accounts of members and partners."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def open_member_accounts(conn: AsyncConnection, *, member_id: uuid.UUID) -> None:
    """Create a member's wallet and debt accounts (wallet first: lower id, locked first)."""
    await conn.execute(
        text(
            "INSERT INTO accounts (kind, owner_id, balance) "
            "VALUES ('wallet', :m, 0), ('debt', :m, 0)"
        ),
        {"m": member_id},
    )


async def open_partner_accounts(conn: AsyncConnection, *, partner_id: uuid.UUID) -> None:
    """Create a partner's issuance and redemption accounts (balances derived from entries)."""
    await conn.execute(
        text("INSERT INTO accounts (kind, owner_id) VALUES ('issuance', :p), ('redemption', :p)"),
        {"p": partner_id},
    )
