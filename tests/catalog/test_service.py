"""The catalog's own rules, without the gateway: drafts, the code pool's limits, updates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import service as catalog
from catalog.errors import RewardNotFound
from catalog.service import MAX_CODES_PER_CALL, RewardDraft
from core.errors import ValidationError
from partners import service as partners


def draft(**kw) -> RewardDraft:
    fields = {
        "title": "Prize",
        "description": "",
        "kind": "VOUCHER",
        "price_points": 10,
        "stock": None,
        "category": None,
        "available_from": None,
        "available_until": None,
        **kw,
    }
    return RewardDraft(**fields)


async def voucher(conn: AsyncConnection, codes: list[str] | None = None) -> catalog.RewardRecord:
    p = await partners.create(conn, name="Vouchers", category="shop", currency="RUB")
    return await catalog.publish(
        conn, partner_id=p.id, draft=draft(), voucher_codes=codes or [], actor="t"
    )


async def test_a_call_adds_at_most_10000_codes(conn: AsyncConnection) -> None:
    assert MAX_CODES_PER_CALL == 10_000
    v = await voucher(conn)
    with pytest.raises(ValidationError) as refused:
        await catalog.add_codes(
            conn, reward_id=v.id, owner=None, codes=[f"c{i}" for i in range(10_001)]
        )
    assert refused.value.details["field"] == "codes"
    reward, added = await catalog.add_codes(
        conn, reward_id=v.id, owner=None, codes=[f"c{i}" for i in range(10_000)]
    )
    assert (added, reward.stock_left) == (10_000, 10_000)
    count = await conn.execute(
        text("SELECT count(*) FROM voucher_codes WHERE reward_id = :r"), {"r": v.id}
    )
    assert count.scalar_one() == 10_000


async def test_codes_are_stripped_and_checked(conn: AsyncConnection) -> None:
    assert catalog.check_codes(["  A-1 ", "A-2"]) == ["A-1", "A-2"]
    for bad, field in (
        (["ok", "x" * 101], "codes[1]"),
        (["a\x00"], "codes[0]"),
        (["\ud800"], "codes[0]"),
        (["A", " A "], "codes[1]"),  # the same once stripped
        (["  "], "codes[0]"),
    ):
        with pytest.raises(ValidationError) as refused:
            catalog.check_codes(bad)
        assert refused.value.details["field"] == field, bad
    assert catalog.check_codes(["x" * 100]) == ["x" * 100]


async def test_a_code_in_the_pool_refuses_the_whole_list(conn: AsyncConnection) -> None:
    v = await voucher(conn, ["A", "B"])
    with pytest.raises(ValidationError, match="1 of these codes"):
        async with conn.begin_nested():  # the caller's unit of work, rolled back by the error
            await catalog.add_codes(conn, reward_id=v.id, owner=None, codes=["C", "A"])
    assert (await catalog.get(conn, reward_id=v.id)).stock_left == 2  # C not added either
    # The same code in another voucher's pool is fine: codes are unique per reward.
    other = await voucher(conn, ["A"])
    assert other.stock_left == 1


async def test_drafts_are_checked_whole(conn: AsyncConnection) -> None:
    now = datetime.now(UTC)
    assert draft(title="  Mug ", category=" home ").checked() == draft(title="Mug", category="home")
    cases = {
        "price": (draft(price_points=0), "pricePoints"),
        "price as a bool": (draft(price_points=True), "pricePoints"),
        "voucher stock": (draft(stock=1), "stock"),
        "goods stock": (draft(kind="GOODS", stock=-1), "stock"),
        "naive start": (draft(available_from=datetime(2030, 1, 1)), "availableFrom"),
        "window": (
            draft(available_from=now, available_until=now - timedelta(seconds=1)),
            "availableUntil",
        ),
        "description": (draft(description="d" * 4001), "description"),
        "kind": (draft(kind="goods"), "kind"),
    }
    for name, (d, field) in cases.items():
        with pytest.raises(ValidationError) as refused:
            d.checked()
        assert refused.value.details["field"] == field, name


async def test_another_partners_reward_is_not_found(conn: AsyncConnection) -> None:
    v = await voucher(conn)
    stranger = uuid.uuid4()
    for change in (
        catalog.update(conn, reward_id=v.id, owner=stranger, changes={"title": "x"}),
        catalog.retire(conn, reward_id=v.id, owner=stranger, at=datetime.now(UTC)),
        catalog.add_codes(conn, reward_id=v.id, owner=stranger, codes=["x"]),
    ):
        with pytest.raises(RewardNotFound):
            await change
    assert await catalog.get(conn, reward_id=v.id) == v
    with pytest.raises(ValidationError, match="cannot change kind"):
        await catalog.update(conn, reward_id=v.id, owner=None, changes={"kind": "GOODS"})
