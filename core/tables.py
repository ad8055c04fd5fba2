"""The Core table behind a model, for statements built from the models (`*/models.py`)."""

from __future__ import annotations

from sqlalchemy import Table
from sqlmodel import SQLModel


def table(model: type[SQLModel]) -> Table:
    """The table of a `table=True` model (SQLModel sets `__table__` but does not declare it)."""
    found = model.__table__  # type: ignore[attr-defined]
    if not isinstance(found, Table):
        raise TypeError(f"{model.__name__} is not a table model")
    return found
