"""Batch files: 1,000 lines applied, then the same file again (0 applied, 1,000 replayed);
bad lines rejected with their line numbers while the rest apply; an import interrupted by a
restart finishing with every line applied once; bad uploads refused with typed errors."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings
from loyalty import imports
from members import service as members
from members.cards import new_card_number
from partners import imports as store
from tests.gateway import oauth_helpers as oh
from tests.gateway.conftest import BASE_URL
from tests.gateway.gql_helpers import (
    PartnerHandle,
    operator_token,
    register_and_login,
    setup_partner,
)
from tests.ledger.invariants import assert_invariants

HEADER = "kind,order_ref,card_number,amount,currency,category,idempotency_key\n"


@pytest.fixture(scope="module")
def settings(db_uri: str) -> Settings:
    return Settings(
        database_url=db_uri,
        public_url=BASE_URL,
        graphql_introspection=True,
        rate_limit_oauth_ip="1000000/minute",
        rate_limit_register="1000000/hour",
        rate_limit_settlement="1000000/minute",
        import_workers=0,  # the tests run the importer themselves
        webhook_workers=0,
    )


async def _runtime(app: Any) -> Any:
    return (await oh.starlette_app_of(app)).state.runtime


def _file(cards: list[str], n: int, tag: str) -> bytes:
    rows = [
        f"earn,{tag}-{i},{cards[i % len(cards)]},{100 + i % 7}.50,RUB,shop,{tag}-key-{i}\n"
        for i in range(n)
    ]
    return (HEADER + "".join(rows)).encode()


async def _upload(
    client: httpx.AsyncClient, token: str, body: bytes, content_type: str = "text/csv"
) -> httpx.Response:
    return await client.post(
        "/imports",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )


async def _status(client: httpx.AsyncClient, token: str, import_id: str) -> dict[str, Any]:
    r = await client.get(f"/imports/{import_id}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _earns(engine: AsyncEngine, partner: PartnerHandle) -> int:
    async with engine.connect() as conn:
        r = await conn.execute(
            text("SELECT count(*) FROM ledger_events WHERE kind = 'earn' AND partner_id = :p"),
            {"p": partner.id},
        )
        return int(r.scalar_one())


async def _world(
    client: httpx.AsyncClient, engine: AsyncEngine, name: str
) -> tuple[PartnerHandle, list[str]]:
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name=name)
    cards = [(await register_and_login(client)).card for _ in range(5)]
    return partner, cards


class Crash(Exception):
    """A restart, inside a chunk's transaction before its commit."""


def _crash_at(n: int) -> Callable[[int], Awaitable[None]]:
    """A `before_commit` that crashes the `n`th chunk's transaction (of any lane)."""
    calls = 0

    async def before_commit(position: int) -> None:
        nonlocal calls
        calls += 1
        if calls == n:
            raise Crash

    return before_commit


async def _restarted_applies_the_rest(
    app: Any,
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    partner: PartnerHandle,
    import_id: uuid.UUID,
) -> None:
    """A new run (what serve's importer does with unfinished imports) applies the rest of the
    file's 1,000 lines, each once."""
    await imports.run_pending(await _runtime(app))
    done = await _status(client, partner.token, str(import_id))
    assert (done["status"], done["applied"], done["replayed"], done["rejected"]) == (
        "done",
        1000,
        0,
        0,
    )
    assert await _earns(engine, partner) == 1000


async def test_a_file_applies_once_and_again_replays(
    app: Any, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    partner, cards = await _world(client, engine, "Importer")
    body = _file(cards, 1000, "f1")
    r = await _upload(client, partner.token, body)
    assert r.status_code == 202, r.text
    first = r.json()
    assert first["status"] == "queued"
    rt = await _runtime(app)
    await imports.run_pending(rt)
    got = await _status(client, partner.token, first["id"])
    assert (got["status"], got["lines"], got["applied"], got["replayed"], got["rejected"]) == (
        "done",
        1000,
        1000,
        0,
        0,
    )
    assert await _earns(engine, partner) == 1000

    r = await _upload(client, partner.token, body)
    again = r.json()["id"]
    await imports.run_pending(rt)
    got = await _status(client, partner.token, again)
    assert (got["applied"], got["replayed"], got["rejected"]) == (0, 1000, 0)
    assert await _earns(engine, partner) == 1000


async def test_bad_lines_are_rejected_with_their_line_numbers(
    app: Any, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    partner, cards = await _world(client, engine, "Bad lines")
    other, _ = await _world(client, engine, "Other importer")
    lines = _file(cards, 20, "b").decode().splitlines(keepends=True)
    lines[3] = "earn,b-bad1,1234567812345678,10.00,RUB,shop,b-bad1\n"  # bad Luhn
    lines[7] = "earn,b-bad2,\x00,10.00,RUB,shop,b-bad2\n"  # NUL byte
    lines[12] = "earn,only,three\n"  # malformed
    lines[15] = f"earn,b-bad4,{cards[0]},10.00,USD,shop,b-bad4\n"  # another currency
    lines[18] = f"spend,b-bad5,{cards[0]},10.00,RUB,shop,b-bad5\n"  # unknown kind
    lines.append(f"earn,b-1,{cards[1]},10.00,RUB,shop,b-other-key\n")  # order of line 3, new key
    body = "".join(lines).encode()
    r = await _upload(client, partner.token, body)
    assert r.status_code == 202
    await imports.run_pending(await _runtime(app))
    got = await _status(client, partner.token, r.json()["id"])
    assert got["lines"] == 21 and got["applied"] == 15 and got["rejected"] == 6
    assert [(e["line"], e["code"]) for e in got["errors"]] == [
        (4, "VALIDATION"),
        (8, "VALIDATION"),
        (13, "VALIDATION"),
        (16, "VALIDATION"),
        (19, "VALIDATION"),
        (22, "VALIDATION"),
    ]
    assert await _earns(engine, partner) == 15
    # Another partner cannot read it.
    r2 = await client.get(
        f"/imports/{r.json()['id']}", headers={"Authorization": f"Bearer {other.token}"}
    )
    assert r2.status_code == 404 and r2.json()["error"]["code"] == "NOT_FOUND"


async def test_an_import_interrupted_by_a_restart_applies_every_line_once(
    app: Any, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    partner, cards = await _world(client, engine, "Restarted")
    r = await _upload(client, partner.token, _file(cards, 1000, "r"))
    import_id = uuid.UUID(r.json()["id"])
    rt = await _runtime(app)

    starts: list[int] = []

    async def crash_at_third(position: int) -> None:
        starts.append(position)
        if len(starts) == 3:
            raise Crash  # inside the third chunk's transaction, before its commit

    with pytest.raises(Crash):
        await imports.run(rt, import_id, chunk_size=100, before_commit=crash_at_third)
    # The first chunks ramp up (12, 24, 48, 96 lines: `imports.RAMP`), then 100 each.
    assert starts == [0, 12, 36]
    mid = await _status(client, partner.token, str(import_id))
    assert (mid["status"], mid["processed"], mid["applied"]) == ("running", 36, 36)
    assert await _earns(engine, partner) == 36
    starts.clear()

    async def record(position: int) -> None:
        starts.append(position)

    await imports.run(rt, import_id, chunk_size=100, before_commit=record)
    # Resumed at 36 (ramping up again), then 100 each; from 816 on, half of what is left, down
    # to 12 (92, 46, 23, 12, then the last 11 lines).
    assert starts == [36, 48, 72, 120, 216, 316, 416, 516, 616, 716, 816, 908, 954, 977, 989]
    await _restarted_applies_the_rest(app, client, engine, partner, import_id)


async def test_an_import_in_lanes_interrupted_by_a_restart_applies_every_line_once(
    app: Any, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Two lanes side by side (the file split by member); one fails inside its fifth chunk's
    transaction overall, which stops the other: every lane resumes where it committed last."""
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Lanes")
    cards = [(await register_and_login(client)).card for _ in range(12)]
    r = await _upload(client, partner.token, _file(cards, 1000, "l"))
    import_id = uuid.UUID(r.json()["id"])
    rt = await _runtime(app)

    with pytest.raises(Crash):
        await imports.run(rt, import_id, chunk_size=100, lanes=2, before_commit=_crash_at(5))
    mid = await _status(client, partner.token, str(import_id))
    assert mid["status"] == "running" and 0 < mid["processed"] < 1000
    assert mid["processed"] == mid["applied"] == await _earns(engine, partner)
    async with engine.connect() as conn:
        record = await store.get(conn, import_id=import_id)
    assert record is not None and record.lanes is not None and len(record.lanes) == 2
    assert sum(record.lanes) == mid["processed"]
    await _restarted_applies_the_rest(app, client, engine, partner, import_id)
    await assert_invariants(engine)


async def test_a_resumed_import_keeps_the_lanes_it_started_with(
    app: Any, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Cards unknown when the import starts get their holders before it resumes: a resume that
    split the file again would move those cards' lines to their members' lanes and make each
    lane's stored position count other lines (some never applied, the import saying done).
    The lanes are dealt from the map stored at the start: every line runs once, the unknown
    cards' lines rejected before the interruption and applied after it."""
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Lane map")
    cards = [(await register_and_login(client)).card for _ in range(12)]
    strangers = [new_card_number() for _ in range(16)]  # no member holds them yet
    rows = [
        f"earn,m-{i},{strangers[i // 4 % 16] if i % 4 == 3 else cards[i % 12]},10.00,RUB,shop,"
        f"m-key-{i}\n"
        for i in range(1000)
    ]
    r = await _upload(client, partner.token, (HEADER + "".join(rows)).encode())
    import_id = uuid.UUID(r.json()["id"])
    rt = await _runtime(app)

    with pytest.raises(Crash):
        await imports.run(rt, import_id, chunk_size=100, lanes=2, before_commit=_crash_at(5))
    mid = await _status(client, partner.token, str(import_id))
    assert mid["status"] == "running" and 0 < mid["rejected"] < 250
    async with engine.begin() as conn:
        for card in strangers:
            await members.create(conn, card_number=card)
    # Split again now (as a resume did before lane maps were stored), the file's lines would be
    # dealt otherwise: those cards are their members' now.
    async with engine.connect() as conn:
        record = await store.get(conn, import_id=import_id)
        stored = (
            await conn.execute(
                text("SELECT lane_map FROM imports WHERE id = :id"), {"id": import_id}
            )
        ).scalar_one()
        body = await store.body(conn, import_id=import_id)
    assert record is not None
    again = await imports.lane_map(
        rt, record, imports.data_lines(body, "csv"), 2, check=False, balanced=False
    )
    assert again != stored
    await imports.run_pending(rt)
    done = await _status(client, partner.token, str(import_id))
    async with engine.connect() as conn:
        earned = set(
            (
                await conn.execute(
                    text("SELECT ref FROM transactions WHERE kind = 'earn' AND partner_id = :p"),
                    {"p": partner.id},
                )
            ).scalars()
        )
    rejected = {e["line"] for e in done["errors"]}
    assert {e["code"] for e in done["errors"]} == {"MEMBER_NOT_FOUND"}
    assert done["status"] == "done" and done["rejected"] == mid["rejected"] == len(rejected)
    assert done["applied"] == len(earned) == 1000 - len(rejected)
    # Each line once: applied, or rejected (an unknown card's, before the interruption).
    for i in range(1000):
        assert (f"m-{i}" in earned) != (i + 2 in rejected), i
        assert i % 4 == 3 or f"m-{i}" in earned, i
    await assert_invariants(engine)


async def test_jsonl_is_accepted(app: Any, client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    partner, cards = await _world(client, engine, "Jsonl")
    good = {
        "kind": "earn",
        "order_ref": "j1",
        "card_number": cards[0],
        "amount": "10.00",
        "currency": "RUB",
        "category": "shop",
        "idempotency_key": "j1",
    }
    body = (json.dumps(good) + '\n{"kind": 3}\n[1]\nnot json\n').encode()
    r = await _upload(client, partner.token, body, "application/x-ndjson")
    assert r.status_code == 202
    await imports.run_pending(await _runtime(app))
    got = await _status(client, partner.token, r.json()["id"])
    assert (got["applied"], got["rejected"]) == (1, 3)
    assert [e["line"] for e in got["errors"]] == [2, 3, 4]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"a,b,c\n1,2,3\n", "text/csv", 422, "VALIDATION"),  # not the header
        (HEADER.encode(), "application/pdf", 422, "VALIDATION"),
        (b"\xff\xfe\x00", "text/csv", 422, "VALIDATION"),
    ],
)
async def test_bad_uploads_are_refused(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Bad upload " + secrets.token_hex(3))
    r = await _upload(client, partner.token, body, content_type)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text


async def test_upload_guards(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    op = await operator_token(client, engine)
    partner = await setup_partner(client, op, name="Guards")
    member = await register_and_login(client)
    r = await client.post("/imports", content=b"x", headers={"Content-Type": "text/csv"})
    assert r.status_code == 401
    r = await _upload(client, member.token, HEADER.encode())
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    r = await _upload(client, op, HEADER.encode())
    assert r.status_code == 403
    r = await client.post(
        "/imports",
        content=b"x",
        headers={
            "Authorization": f"Bearer {partner.token}",
            "Content-Type": "text/csv",
            "Content-Length": str(imports.MAX_BYTES + 1),
        },
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    async def big() -> Any:
        yield HEADER.encode()
        for _ in range(51):
            yield b"#" * (1024 * 1024)

    r = await client.post(
        "/imports",
        content=big(),
        headers={"Authorization": f"Bearer {partner.token}", "Content-Type": "text/csv"},
    )
    assert r.status_code == 413
    r = await client.get("/imports/not-an-id", headers={"Authorization": f"Bearer {partner.token}"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION"
    r = await client.get(
        f"/imports/{uuid.uuid4()}", headers={"Authorization": f"Bearer {partner.token}"}
    )
    assert r.status_code == 404
