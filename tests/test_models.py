"""The table models and the migrations describe the same database.

The migrations are written by hand and create the schema; the models (`*/models.py`) are what
the code builds its statements from. Two guards keep them one: a database migrated to head
compared with the models' metadata by alembic's autogenerate, and each model's annotations
compared with its columns (a NOT NULL column is not annotated `X | None`, a `Numeric` is a
`Decimal`), so a row read through a model is what its annotations say.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import ARRAY, JSON, CheckConstraint, Connection, create_engine, inspect
from sqlmodel import SQLModel

from core.db import sqlalchemy_url
from migrations.runner import target_metadata
from tests.db import create_test_database, drop_database

# Tables and indexes that migrations create on purpose without a model, with the reason: none
# today. Triggers and functions (the ledger's balances and insert-only guards, settlement's
# frozen periods) and views are created by the migrations on purpose and have no model either,
# but autogenerate never sees them (it reflects tables, columns, indexes, unique and foreign
# keys; alembic skips its own `alembic_version`), so they need no entry here.
MIGRATION_ONLY: frozenset[tuple[str, str]] = frozenset()


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Compare every object autogenerate sees except those listed in MIGRATION_ONLY."""
    return (type_, str(name)) not in MIGRATION_ONLY


@pytest.fixture(scope="module")
def migrated() -> Iterator[Connection]:
    """A connection to a fresh database migrated to head."""
    admin, uri = create_test_database("coalition_models")
    engine = create_engine(sqlalchemy_url(uri))
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()
        drop_database(admin, uri)


def test_models_agree_with_migrations(migrated: Connection) -> None:
    """Tables, columns, types, nullability, server defaults, indexes, uniques, foreign keys."""
    context = MigrationContext.configure(
        migrated,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_object": include_object,
        },
    )
    assert compare_metadata(context, target_metadata) == []


def test_check_constraints_agree_with_migrations(migrated: Connection) -> None:
    """Autogenerate does not compare CHECK constraints: their names at least must match."""
    inspector = inspect(migrated)
    differences = {}
    for name, table in target_metadata.tables.items():
        in_db = {str(c["name"]) for c in inspector.get_check_constraints(name)}
        in_model = {str(c.name) for c in table.constraints if isinstance(c, CheckConstraint)}
        if in_db != in_model:
            differences[name] = (sorted(in_db - in_model), sorted(in_model - in_db))
    assert differences == {}


def _agrees(annotation: Any, column_type: Any) -> bool:
    if isinstance(column_type, JSON):  # JSON objects or arrays: any dict[...] or list[...]
        return typing.get_origin(annotation) in (dict, list)
    if isinstance(column_type, ARRAY):
        item = column_type.item_type.python_type
        return typing.get_origin(annotation) is list and typing.get_args(annotation) == (item,)
    return bool(annotation == column_type.python_type)


def test_annotations_agree_with_columns() -> None:
    """A field is `X | None` exactly when its column is nullable, and X is the column's type."""
    disagreements = []
    for mapper in SQLModel._sa_registry.mappers:
        model = mapper.class_
        for column in model.__table__.columns:
            annotation = model.model_fields[column.name].annotation
            args = typing.get_args(annotation)
            optional = (
                typing.get_origin(annotation) in (typing.Union, types.UnionType)
                and type(None) in args
            )
            if optional:
                (annotation,) = (a for a in args if a is not type(None))
            if optional != column.nullable or not _agrees(annotation, column.type):
                shown = f"{annotation} | None" if optional else str(annotation)
                disagreements.append(
                    f"{model.__name__}.{column.name}: annotated {shown}, column "
                    f"{column.type} {'NULL' if column.nullable else 'NOT NULL'}"
                )
    assert not disagreements, "\n".join(sorted(disagreements))
