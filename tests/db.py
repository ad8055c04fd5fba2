"""Test databases: a fresh, migrated database per test session on a real PostgreSQL.

`DATABASE_URL` set: a new database on that server. Unset: the embedded PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from core.db import libpq_uri, start_embedded
from migrations.runner import upgrade

ROOT = Path(__file__).resolve().parent.parent


def admin_uri() -> str:
    """A URI of the server's maintenance database."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return libpq_uri(url)
    data_dir = Path(os.environ.get("DATA_DIR", ROOT / ".data"))
    return start_embedded(data_dir).get_uri("postgres")


def with_database(uri: str, name: str) -> str:
    return make_url(uri).set(database=name).render_as_string(hide_password=False)


def create_test_database(prefix: str = "coalition_test") -> tuple[str, str]:
    """Create and migrate a fresh database; returns (admin uri, database uri)."""
    admin = admin_uri()
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    uri = with_database(admin, name)
    upgrade(uri)
    return admin, uri


def drop_database(admin: str, uri: str) -> None:
    name = make_url(uri).database
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
