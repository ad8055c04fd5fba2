"""Test databases on a real PostgreSQL, each a copy of one migrated template per test session.

`DATABASE_URL` set: new databases on that server. Unset: the embedded PostgreSQL.
The migrations run once per session, into a template; every database a test asks for is
`CREATE DATABASE ... TEMPLATE` of it (a file copy, about 50 ms, against about 400 ms of
migrating), so a module or a test can afford a database of its own.
"""

from __future__ import annotations

import atexit
import os
import secrets
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from core.db import libpq_uri, start_embedded
from migrations.runner import upgrade

ROOT = Path(__file__).resolve().parent.parent

_template: tuple[str, str] | None = None  # (admin uri, template uri) of this process


def admin_uri() -> str:
    """A URI of the server's maintenance database."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return libpq_uri(url)
    data_dir = Path(os.environ.get("DATA_DIR", ROOT / ".data"))
    return start_embedded(data_dir).get_uri("postgres")


def with_database(uri: str, name: str) -> str:
    return make_url(uri).set(database=name).render_as_string(hide_password=False)


def _name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"


def migrated_template() -> tuple[str, str]:
    """This process's migrated template database (created on first use); nobody connects to
    it after the migrations, as `CREATE DATABASE ... TEMPLATE` requires."""
    global _template
    if _template is None:
        admin = admin_uri()
        name = _name("coalition_tpl")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        uri = with_database(admin, name)
        upgrade(uri)
        _template = admin, uri
        # A process that is not a pytest session (a benchmark) drops it on its way out too.
        atexit.register(drop_template)
    return _template


def drop_template() -> None:
    """Drop this process's template, if it made one."""
    global _template
    if _template is not None:
        drop_database(*_template)
        _template = None


def create_test_database(prefix: str = "coalition_test") -> tuple[str, str]:
    """A fresh, migrated database of its own; returns (admin uri, database uri)."""
    admin, template = migrated_template()
    name = _name(prefix)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(template).database}"')
    return admin, with_database(admin, name)


def drop_database(admin: str, uri: str) -> None:
    name = make_url(uri).database
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
