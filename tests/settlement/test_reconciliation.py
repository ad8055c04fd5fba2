"""Reconciliation of a partner's own file against the ledger."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from core.errors import ValidationError
from core.money import Money
from settlement import reconciliation
from settlement import service as settlement
from settlement.errors import (
    ReconciliationFileError,
    ReconciliationLimitExceeded,
    ReconciliationNotFound,
)
from tests.settlement.helpers import coalition, earn, redeem, return_points, reverse

MAR = datetime(2024, 3, 1, tzinfo=UTC)
APR = datetime(2024, 4, 1, tzinfo=UTC)


async def _march(sengine):
    (a, b), (m, n) = await coalition(
        sengine,
        prices=[("0.015", "0.01"), ("0.02", "0.012")],
        effective_from=MAR - timedelta(days=30),
    )
    o1 = await earn(sengine, m, a, 1000, MAR + timedelta(days=1), ref="order-1")
    await earn(sengine, m, a, 500, MAR + timedelta(days=2), ref="order-2")
    await earn(sengine, n, a, 300, MAR + timedelta(days=2), ref="order-3")
    await earn(sengine, n, b, 999, MAR + timedelta(days=2), ref="order-1")  # B's own order-1
    await reverse(sengine, a, o1, 100, MAR + timedelta(days=3), ref="order-1")
    h1, _ = await redeem(sengine, n, a, 150, MAR + timedelta(days=4), ref="order-4")
    await redeem(sengine, n, a, 60, MAR + timedelta(days=4), capture=50, ref="order-4")
    await return_points(sengine, a, h1, 40, MAR + timedelta(days=5), ref="order-4")
    await earn(sengine, m, a, 7, APR, ref="order-5")  # April: not in the period
    async with sengine.begin() as conn:
        period = await settlement.run(
            conn, currency="RUB", period_start=MAR, period_end=APR, actor="operator"
        )
    return period, a, b


GOOD = """order_ref,kind,points,amount
order-1,earn,1000,15.00
order-1,reversal,100,1.50
order-2,earn,500,7.00
order-3,earn,301,4.51
order-4,capture,150,1.50
order-4,capture,50,0.50
order-9,earn,10,0.15
"""


async def test_every_discrepancy_class_is_found(sengine) -> None:
    period, a, b = await _march(sengine)
    async with sengine.begin() as conn:
        rep = await reconciliation.reconcile(
            conn,
            max_per_period=20,
            period_id=period.id,
            partner_id=a,
            data=GOOD.encode(),
            actor="partner",
            filename="march.csv",
        )
    assert (
        rep.file_lines,
        rep.matched,
        rep.mismatched,
        rep.missing_in_ledger,
        rep.missing_in_file,
    ) == (7, 3, 2, 1, 1)
    by = {(x.order_ref, x.kind): x for x in rep.lines}
    assert by[("order-1", "earn")].status == "matched"
    assert by[("order-1", "reversal")].status == "matched"
    # Two lines of the file and two captures of the ledger, added up.
    cap = by[("order-4", "capture")]
    assert (cap.status, cap.file_lines, len(cap.transaction_ids)) == ("matched", [6, 7], 2)
    amount = by[("order-2", "earn")]
    assert amount.status == "mismatched" and amount.amount_differs and not amount.points_differ
    assert (amount.file_amount, amount.ledger_amount) == (
        Money(Decimal("7.00"), "RUB"),
        Money(Decimal("7.50"), "RUB"),
    )
    points = by[("order-3", "earn")]
    assert (
        points.status == "mismatched"
        and points.points_differ
        and (points.file_points, points.ledger_points) == (301, 300)
    )
    assert by[("order-9", "earn")].status == "missing_in_ledger" and by[
        ("order-9", "earn")
    ].file_lines == [8]
    ret = by[("order-4", "return")]
    assert (ret.status, ret.ledger_points, ret.ledger_amount) == (
        "missing_in_file",
        40,
        Money(Decimal("0.40"), "RUB"),
    )
    assert ("order-5", "earn") not in by  # April's event is another period's
    assert all(
        x.kind != "earn" or x.ledger_points != 999 for x in rep.lines
    )  # B's order-1 is not A's

    async with sengine.connect() as conn:
        stored = await reconciliation.get_report(conn, reconciliation_id=rep.id, partner_id=a)
        assert stored == rep.__class__(**{**rep.__dict__, "created_at": stored.created_at})
        with pytest.raises(ReconciliationNotFound):
            await reconciliation.get_report(conn, reconciliation_id=rep.id, partner_id=b)
        assert [
            r.id for r in await reconciliation.list_reports(conn, period_id=period.id, partner_id=a)
        ] == [rep.id]
        assert await reconciliation.list_reports(conn, partner_id=b) == []


BAD = [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", "line 1: not UTF-8"),
    (b"order_ref,kind,points,amount\norder-1,earn,1,0.01\n\xff\xfe garbage\n", "line 3: not UTF-8"),
    (b"order_ref,kind,points,amount\norder-1,earn,1,0.01\x00\n", "line 2: contains a NUL"),
    (b"", "line 1: the file is empty"),
    (
        b"ref,type,pts,amt\norder-1,earn,1,0.01\n",
        "line 1: the header must be exactly order_ref,kind,points,amount",
    ),
    (b"order_ref;kind;points;amount\n", "separated by commas"),
    (b"order_ref,kind,points,amount,extra\n", "line 1: the header must be exactly"),
    (
        b"order_ref,kind,points,amount\norder-1,earn,1000,15.00\norder-2,earn,abc,1.00\n",
        "line 3: points must be a whole number",
    ),
    (b"order_ref,kind,points,amount\norder-1,earn,1000\n", "line 2: expected 4 fields"),
    (b"order_ref,kind,points,amount\norder-1,earn,-5,1.00\n", "line 2: points"),
    (
        b"order_ref,kind,points,amount\norder-1,earn,5,1.001\n",
        "line 2: amount must be a non-negative decimal with at most 2",
    ),
    (b"order_ref,kind,points,amount\norder-1,earn,5,1e3\n", "line 2: amount"),
    (b"order_ref,kind,points,amount\norder-1,refund,5,1.00\n", "line 2: kind must be one of"),
    (b"order_ref,kind,points,amount\n,earn,5,1.00\n", "line 2: order_ref"),
    (
        b'order_ref,kind,points,amount\n\norder-1,earn,5,1.00\n"order-2,earn,5,1.00\n',
        "line 4: not valid CSV",
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD, ids=[m for _, m in BAD])
async def test_malformed_files_are_refused_naming_the_line(sengine, data, message) -> None:
    period, a, _ = await _march(sengine)
    with pytest.raises(ReconciliationFileError) as err:
        async with sengine.begin() as conn:
            await reconciliation.reconcile(
                conn,
                max_per_period=20,
                period_id=period.id,
                partner_id=a,
                data=data,
                actor="partner",
            )
    assert message in err.value.message
    assert err.value.code == "VALIDATION"
    async with sengine.connect() as conn:
        assert (
            await conn.execute(text("SELECT count(*) FROM settlement_reconciliations"))
        ).scalar_one() == 0


def test_size_limits() -> None:
    too_big = b"order_ref,kind,points,amount\n" + b"x" * reconciliation.MAX_BYTES
    with pytest.raises(ReconciliationFileError, match="at most 5,242,880 bytes"):
        reconciliation.parse(too_big, currency="RUB")
    lines = "order_ref,kind,points,amount\n" + "".join(
        f"o{i},earn,1,0.01\n" for i in range(reconciliation.MAX_LINES + 1)
    )
    with pytest.raises(
        ReconciliationFileError, match="line 100002: the file has more than 100,000 lines"
    ):
        reconciliation.parse(lines.encode(), currency="RUB")
    ok = reconciliation.parse(
        "\ufeffORDER_REF, kind ,points,amount\r\n"
        + "a,capture,1,0\r\n"
        + '"b,c",earn,2,0.5\r\n\r\n',
        currency="RUB",
    )
    assert [(x.line, x.order_ref, x.kind, x.points, x.amount) for x in ok] == [
        (2, "a", "capture", 1, Decimal(0)),
        (3, "b,c", "earn", 2, Decimal("0.5")),
    ]
    with pytest.raises(ReconciliationFileError, match="line 2: amount"):
        reconciliation.parse("order_ref,kind,points,amount\na,earn,1,0.5\n", currency="JPY")


async def _count(sengine, table: str) -> int:
    async with sengine.connect() as conn:
        return (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()


async def test_uploads_per_partner_and_period_are_bounded(sengine) -> None:
    period, a, b = await _march(sengine)
    for _ in range(2):
        async with sengine.begin() as conn:
            await reconciliation.reconcile(
                conn, period_id=period.id, partner_id=a, data=GOOD, actor="a", max_per_period=2
            )
    reports, lines = (
        await _count(sengine, "settlement_reconciliations"),
        await _count(sengine, "settlement_reconciliation_lines"),
    )
    with pytest.raises(ReconciliationLimitExceeded) as err:
        async with sengine.begin() as conn:
            await reconciliation.reconcile(
                conn, period_id=period.id, partner_id=a, data=GOOD, actor="a", max_per_period=2
            )
    assert err.value.code == "LIMIT_EXCEEDED" and err.value.details == {"limit": 2, "stored": 2}
    assert await _count(sengine, "settlement_reconciliations") == reports
    assert await _count(sengine, "settlement_reconciliation_lines") == lines
    async with sengine.begin() as conn:  # another partner of the same period has its own bound
        await reconciliation.reconcile(
            conn, period_id=period.id, partner_id=b, data=GOOD, actor="b", max_per_period=2
        )


def _many(n: int) -> str:
    """n lines the ledger does not have (no header)."""
    return "".join(f"x-{i},earn,{i + 1},0.{i % 10}0\n" for i in range(n))


async def test_lines_page_returns_every_line_once(sengine) -> None:
    period, a, _ = await _march(sengine)
    async with sengine.begin() as conn:
        rep = await reconciliation.reconcile(
            conn,
            max_per_period=20,
            period_id=period.id,
            partner_id=a,
            data=GOOD + _many(250),
            actor="a",
        )
    assert [x.seq for x in rep.lines] == list(range(1, 258))  # 7 of GOOD, 250 more
    async with sengine.connect() as conn:
        seen, after = [], None
        while True:
            page, after = await reconciliation.lines_page(
                conn, reconciliation_id=rep.id, after=after, limit=7
            )
            assert 1 <= len(page) <= 7
            seen += page
            if after is None:
                break
        assert seen == rep.lines  # each line exactly once, in report order
        only, after = await reconciliation.lines_page(
            conn, reconciliation_id=rep.id, statuses=["mismatched", "missing_in_file"]
        )
        assert after is None
        assert [x.status for x in only] == ["mismatched", "mismatched", "missing_in_file"]
        default, after = await reconciliation.lines_page(conn, reconciliation_id=rep.id)
        assert len(default) == reconciliation.PAGE_DEFAULT and after == default[-1].seq
        for bad in (
            {"limit": reconciliation.PAGE_MAX + 1},
            {"limit": 0},
            {"after": -1},
            {"after": 99999999999999999999999},
            {"statuses": ["nope"]},
        ):
            with pytest.raises(ValidationError):
                await reconciliation.lines_page(conn, reconciliation_id=rep.id, **bad)
        header = await reconciliation.get_report(conn, reconciliation_id=rep.id, with_lines=False)
        assert header.lines == [] and header.missing_in_ledger == 251


async def test_parsing_and_matching_run_off_the_event_loop(sengine, monkeypatch) -> None:
    period, a, _ = await _march(sengine)
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def spy(fn):
        def wrapper(*args, **kwargs):
            seen.append(threading.get_ident())
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(reconciliation, "parse", spy(reconciliation.parse))
    monkeypatch.setattr(reconciliation, "_compare", spy(reconciliation._compare))
    async with sengine.begin() as conn:
        rep = await reconciliation.reconcile(
            conn, max_per_period=20, period_id=period.id, partner_id=a, data=GOOD, actor="a"
        )
    assert rep.matched == 3 and len(seen) == 2 and loop_thread not in seen
