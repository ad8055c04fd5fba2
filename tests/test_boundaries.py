"""Boundaries between the packages that import-linter cannot see: SQL text and settings.

- A package other than `ledger` reads the ledger through `ledger.reads` (functions) or the views
  of migration 0008 (`ledger_events`, ...), never by naming a ledger table in SQL or importing
  its models; likewise a package other than `partners` reads the partners through
  `partners.service` or the views of migration 0009 (`partner_agreements`), and one other than
  `catalog` the catalog through `catalog.service`.
- Settings are passed, never fetched: only the gateway (the app, the CLI) and `core` (where
  `get_settings` lives) call `get_settings`; every other package takes what it needs as
  arguments.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import Table

import catalog.models
import ledger.models
import partners.models

ROOT = Path(__file__).resolve().parent.parent
NOT_PRODUCT = {"tests", "migrations", "bench"}  # migrations create the tables; bench seeds them


def _packages() -> list[str]:
    return sorted(
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").is_file() and p.name not in NOT_PRODUCT
    )


def _sources(packages: list[str]) -> Iterator[tuple[Path, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def tables_of(models: ModuleType) -> set[str]:
    """The tables a `models.py` declares (ORM classes or Core tables)."""
    tables = (getattr(value, "__table__", value) for value in vars(models).values())
    return {t.name for t in tables if isinstance(t, Table)}


def ledger_tables() -> set[str]:
    return tables_of(ledger.models)


# The packages whose tables no other package names in SQL or imports the models of, and what
# the others read instead.
OWNED = {
    "ledger": (ledger.models, "read the ledger through ledger.reads or its views (migration 0008)"),
    "partners": (
        partners.models,
        "read the partners through partners.service or their views (migration 0009)",
    ),
    "catalog": (catalog.models, "read the catalog through catalog.service"),
}


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def sql_strings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every string literal of a module but its docstrings (f-strings: their literal parts)."""
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def naming_sql(text: str, tables: set[str]) -> set[str]:
    """The tables of `tables` that SQL in `text` reads or writes (FROM, JOIN, INTO, UPDATE...)."""
    names = "|".join(sorted(map(re.escape, tables)))
    pattern = re.compile(
        rf"\b(?:from|join|into|update|table|truncate)\s+(?:only\s+)?(?:public\.)?\"?({names})\b"
        r"(?![\w.'])",  # a possessive (partners') is prose
        re.IGNORECASE,
    )
    return {m.group(1).lower() for m in pattern.finditer(text)}


def test_the_owned_tables_are_known() -> None:
    assert {"transactions", "lots", "lot_postings", "holds", "accounts"} <= ledger_tables()
    assert {"partners", "agreements", "earn_rules"} <= tables_of(partners.models)
    assert {"rewards", "voucher_codes", "reward_redemptions", "offers", "promo_codes"} <= tables_of(
        catalog.models
    )


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        ("SELECT id FROM transactions WHERE x", {"transactions"}),
        ("select 1 from  lots l join hold_allocations a on true", {"lots", "hold_allocations"}),
        ("INSERT INTO entries (a) VALUES (1)", {"entries"}),
        ("SELECT * FROM ledger_events e JOIN ledger_lots l ON true", set()),
        ("SELECT * FROM settlement_transactions", set()),
        ("the lots of a member, from holds_x", set()),
    ],
)
def test_naming_sql_finds_ledger_tables(sql: str, found: set[str]) -> None:
    assert naming_sql(sql, ledger_tables()) == found


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        ("SELECT 1 FROM agreements WHERE currency = :c", {"agreements"}),
        ("SELECT NOT EXISTS (SELECT 1 FROM partners)", {"partners"}),
        ("SELECT * FROM partner_agreements a JOIN x ON true", set()),
        ("points issued from partners' agreements", set()),
    ],
)
def test_naming_sql_finds_partner_tables(sql: str, found: set[str]) -> None:
    assert naming_sql(sql, tables_of(partners.models)) == found


@pytest.mark.parametrize("owner", sorted(OWNED))
def test_no_package_names_another_packages_table_in_sql(owner: str) -> None:
    models, hint = OWNED[owner]
    tables = tables_of(models)
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {', '.join(sorted(named))}"
        for path, tree in _sources([p for p in _packages() if p != owner])
        for line, text in sql_strings(tree)
        if (named := naming_sql(text, tables))
    ]
    assert offenders == [], hint


@pytest.mark.parametrize("owner", sorted(OWNED))
def test_no_package_imports_another_packages_models(owner: str) -> None:
    models = f"{owner}.models"
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path, tree in _sources([p for p in _packages() if p != owner])
        for node in ast.walk(tree)
        if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith(models))
        or (
            isinstance(node, ast.ImportFrom)
            and node.module == owner
            and any(a.name == "models" for a in node.names)
        )
        or (isinstance(node, ast.Import) and any(a.name.startswith(models) for a in node.names))
    ]
    assert offenders == [], OWNED[owner][1]


def test_only_the_gateway_and_core_fetch_the_settings() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path, tree in _sources([p for p in _packages() if p not in {"gateway", "core"}])
        for node in ast.walk(tree)
        if (isinstance(node, ast.Name) and node.id == "get_settings")
        or (isinstance(node, ast.Attribute) and node.attr == "get_settings")
        or (isinstance(node, ast.alias) and node.name.endswith("get_settings"))
    ]
    assert offenders == [], "pass the settings a domain needs as arguments (gateway.app, cli)"
