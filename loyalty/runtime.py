"""What the use cases run on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings
from ledger.batch import EarnBatcher
from loyalty.caches import Caches


class Runtime(Protocol):
    """The database (SQLAlchemy engine, and psycopg's pool for the earn hot path), the earn
    batcher (group commit), the settings and the process-wide caches. The GraphQL context is
    one; `Services` is one for callers without it (CLI, imports, webhooks)."""

    engine: AsyncEngine
    pool: AsyncConnectionPool
    earns: EarnBatcher
    settings: Settings
    caches: Caches


@dataclass
class Services:
    """A plain `Runtime`."""

    engine: AsyncEngine
    pool: AsyncConnectionPool
    earns: EarnBatcher
    settings: Settings
    caches: Caches
