"""Run Alembic programmatically, so the installed `coalition migrate` needs no alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlmodel import SQLModel

import catalog.models  # noqa: F401  (register tables)
import gateway.models
import gateway.oauth.models  # noqa: F401
import ledger.models  # noqa: F401
import members.models  # noqa: F401
import partners.models  # noqa: F401
import settlement.models  # noqa: F401
from core.db import sqlalchemy_url

target_metadata = SQLModel.metadata
HERE = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at this package and `database_url` (a libpq URI)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    url = sqlalchemy_url(database_url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`."""
    command.upgrade(alembic_config(database_url), revision)
