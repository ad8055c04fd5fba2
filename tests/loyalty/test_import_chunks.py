"""A batch file's set-based chunks (`loyalty.imports`) against the earn and refund use cases run
one line at a time: the same outcome per line (applied, replayed, rejected with its code) and
the same ledger (earns with their breakdowns, reversals, balances, lots, offer uses), whatever
the chunk size, for a file mixing good lines, bad lines, replays of earlier earns, keys and
orders used twice, earns with offers that need the member's state, and refunds.

Two worlds in one database: a partner each, with the same offers and members; one gets the
file as an import, the other the same lines one by one through the use cases."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from core.errors import DomainError
from core.metrics import REGISTRY
from ledger import service as ledger
from loyalty import earn as earning
from loyalty import imports
from loyalty import offers as loyalty_offers
from loyalty import refund as refunding
from loyalty.runtime import Services
from members import service as members
from members.cards import new_card_number
from partners import imports as store
from partners.imports import ImportRecord
from tests.ledger.invariants import assert_invariants
from tests.loyalty.conftest import partner_in_force

HEADER = "kind,order_ref,card_number,amount,currency,category,idempotency_key\n"

# {cN}: the world's member N's card; {unknown}: a valid card nobody holds.
FILE = [
    "earn,o1,{c0},100.00,RUB,shop,k1",  # the statement (a stackable x2 offer for shop)
    "earn,o2,{c1},200.00,RUB,promo,k2",  # once per member: applies
    "earn,o3,{c1},300.00,RUB,promo,k3",  # used up
    "earn,o4,{c0},50.00,RUB,act,k4",  # activated by member 0: x3
    "earn,o5,{c2},50.00,RUB,act,k5",  # not activated by member 2
    "earn,o6,1234567812345678,10.00,RUB,shop,k6",  # bad Luhn digit
    "earn,o7,{unknown},10.00,RUB,shop,k7",  # nobody's card
    "earn,o8,{c0},10.00,USD,shop,k8",  # another currency
    "earn,pre,{c0},100.00,RUB,shop,kpre",  # the replay of an earn made before the file
    "earn,o10,{c0},100.00,RUB,shop,kpre",  # that key, another request: a conflict
    "earn,o1,{c2},100.00,RUB,shop,k11",  # order o1 again, a new key: refused
    "earn,o1,{c0},100.00,RUB,shop,k1",  # line 1 again: a replay
    "earn,o13,{c1},0.01,RUB,shop,k13",  # earns no points
    "earn,o14,{c2},100.00,RUB,promo,k1",  # an offer with uses, the key of line 1: a conflict
    "refund,o1,,50.00,RUB,,r1",  # half of order o1 refunded, after its earn
    "spend,o16,{c0},10.00,RUB,shop,k16",  # unknown kind
    "earn,o17,{c3},1000.00,RUB,shop,k17",
    "earn,only,three",  # malformed
    "earn,o19,{c3},100.00,RUB,promo,k19",
    "earn,o20,{c3},100.00,RUB,promo,k20",  # used up
    "earn,o21,{c1},25.50,RUB,,k21",
    "refund,nope,,5.00,RUB,,r2",  # an order that never earned
    "earn,o23,{c2},70.00,RUB,act,k23",
    "earn,o24,{c0},80.00,RUB,shop,k24",
    "earn,o24,{c0},80.00,RUB,shop,k24",  # a replay within the chunk
    "earn,o26,{c1},10.00,RUB,shop," + "k" * 201,  # a key too long for the ledger
    "earn,o27,{c1},10.00,RUB,shop,k27",
]


# FILE without its two lines that use another member's order (line 11) or key (line 14): every
# key and order is one member's, so the file splits into lanes (`imports.split_lanes`).
LANE_FILE = [row for n, row in enumerate(FILE, 2) if n not in (12, 15)]


@dataclass
class World:
    partner: uuid.UUID
    cards: list[str]
    members: list[uuid.UUID]
    offers: dict[uuid.UUID, str]  # id -> name

    def file(self, unknown: str, rows: list[str] = FILE) -> bytes:
        cards = {f"c{i}": c for i, c in enumerate(self.cards)}
        return (
            HEADER + "".join(row.format(**cards, unknown=unknown) + "\n" for row in rows)
        ).encode()


async def _world(rt: Services, name: str) -> World:
    partner = await partner_in_force(rt, f"{name} {uuid.uuid4().hex[:6]}", base_rate="0.1")
    async with rt.engine.begin() as conn:
        ms = [await members.create(conn, name=f"{name} {i}") for i in range(4)]
    specs: dict[str, dict[str, Any]] = {
        "x2 shop": {"multiplier": "2", "category": "shop", "stackable": True},
        "bonus once": {"bonus_points": 100, "category": "promo", "max_uses_per_member": 1},
        "x3 activated": {"multiplier": "3", "category": "act", "requires_activation": True},
    }
    offers = {}
    for offer_name, spec in specs.items():
        fields: dict[str, Any] = {
            "name": offer_name,
            "description": "",
            "multiplier": None,
            "bonus_points": None,
            "category": None,
            "starts_at": None,
            "ends_at": None,
            "requires_activation": False,
            "max_uses_per_member": None,
            "stackable": False,
            "min_tier": None,
            **spec,
        }
        created = await loyalty_offers.create(rt, actor="test", partner_id=partner, **fields)
        offers[created.id] = offer_name
    act = next(i for i, n in offers.items() if n == "x3 activated")
    await loyalty_offers.activate(rt, member_id=ms[0].id, offer_id=str(act))
    world = World(partner, [m.card_number for m in ms], [m.id for m in ms], offers)
    # An earn before the file, which line 9 replays.
    await _earn(rt, world, ["earn", "pre", world.cards[0], "100.00", "RUB", "shop", "kpre"])
    return world


async def _earn(rt: Services, world: World, f: list[str]) -> Any:
    return await earning.earn(
        rt,
        actor="client",
        key_space=ledger.partner_key_space(world.partner),
        partner_id=world.partner,
        card_number=f[2],
        amount=f[3],
        currency=f[4],
        category=f[5] or None,
        order_ref=f[1],
        idempotency_key=f[6],
    )


async def _one_by_one(rt: Services, world: World, body: bytes) -> tuple[int, int, list[Any]]:
    """The reference: each line through its use case, in line order."""
    applied = replayed = 0
    rejected = []
    for line, raw in imports.data_lines(body, "csv"):
        try:
            f = imports.parse_line(raw, "csv")
            kind = f["kind"]
            values = [f[k] for k in imports.HEADER]
            if kind == "earn":
                result = await _earn(rt, world, values)
            elif kind == "refund":
                result = await refunding.refund(
                    rt,
                    actor="client",
                    partner_id=world.partner,
                    order_ref=f["order_ref"],
                    amount=f["amount"],
                    currency=f["currency"],
                    idempotency_key=f["idempotency_key"],
                )
            else:
                rejected.append((line, "VALIDATION"))
                continue
        except DomainError as exc:
            rejected.append((line, str(exc.code)))
            continue
        if getattr(result, "replayed", False):
            replayed += 1
        else:
            applied += 1
    return applied, replayed, rejected


async def _ledger(rt: Services, world: World) -> dict[str, Any]:
    """The world's ledger, without ids or times: its partner's transactions with their
    members (by index) and breakdowns (offers by name), the members' balances, lots and uses."""
    index = {m: i for i, m in enumerate(world.members)}
    async with rt.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT id, kind, ref, points, operator_points, member_id, amount "
                    "FROM transactions WHERE partner_id = :p OR member_id = ANY(:m)"
                ),
                {"p": world.partner, "m": world.members},
            )
        ).all()
        lines = await ledger.earn_lines(conn, transaction_ids=[r.id for r in rows])
        wallets = (
            await conn.execute(
                text(
                    "SELECT owner_id, kind, balance FROM accounts "
                    "WHERE owner_id = ANY(:m) AND kind IN ('wallet', 'debt')"
                ),
                {"m": world.members},
            )
        ).all()
        lots = (
            await conn.execute(
                text(
                    "SELECT member_id, points, remaining, reversed, issuer_id IS NULL AS operator "
                    "FROM lots WHERE member_id = ANY(:m)"
                ),
                {"m": world.members},
            )
        ).all()
        uses = (
            await conn.execute(
                text(
                    "SELECT member_id, offer_id, uses FROM offer_uses "
                    "WHERE member_id = ANY(:m) AND uses > 0"
                ),
                {"m": world.members},
            )
        ).all()
    return {
        "transactions": sorted(
            (
                r.kind,
                r.ref,
                r.points,
                r.operator_points,
                index[r.member_id],
                str(r.amount),
                tuple(
                    (x.source, x.points, world.offers.get(x.offer_id), x.funded_by)  # type: ignore[arg-type]
                    for x in lines.get(r.id, ())
                ),
            )
            for r in rows
        ),
        "accounts": sorted((index[w.owner_id], w.kind, w.balance) for w in wallets),
        "lots": sorted(
            (index[x.member_id], x.points, x.remaining, x.reversed, x.operator) for x in lots
        ),
        "uses": sorted((index[u.member_id], world.offers[u.offer_id], u.uses) for u in uses),
    }


def _issued() -> float:
    """The points counted as issued by earns so far (`/metrics`, this process)."""
    value = REGISTRY.get_sample_value("coalition_points_issued_total", {"kind": "earn"})
    return value or 0.0


async def _imported(rt: Services, world: World, body: bytes, **run: Any) -> Any:
    async with rt.engine.begin() as conn:
        record = await store.create(
            conn,
            partner_id=world.partner,
            actor="client",
            fmt="csv",
            body=body,
            lines=len(imports.data_lines(body, "csv")),
        )
    done = await imports.run(rt, record.id, **run)
    assert done is not None and done.status == "done"
    async with rt.engine.connect() as conn:
        errors = await store.errors(conn, import_id=record.id)
    return done, (done.applied, done.replayed, [(e.line, e.code) for e in errors])


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
async def test_a_chunk_gives_the_ledger_of_one_line_at_a_time(
    fresh_services: Services, chunk_size: int
) -> None:
    rt = fresh_services
    unknown = new_card_number()
    reference = await _world(rt, "one by one")
    imported = await _world(rt, "imported")

    before = _issued()
    expected = await _one_by_one(rt, reference, reference.file(unknown))
    between = _issued()
    _, got = await _imported(rt, imported, imported.file(unknown), chunk_size=chunk_size)
    assert got == expected
    # Counted as issued (`/metrics`) as one by one: every earn applied, no replay
    assert _issued() - between == between - before > 0
    assert await _ledger(rt, imported) == await _ledger(rt, reference)
    assert await _ledger(rt, imported) != {}  # (the comparison compares something)
    await assert_invariants(rt.engine)


@pytest.mark.parametrize(("chunk_size", "lanes"), [(3, 2), (100, 2), (3, 3)])
async def test_lanes_give_the_ledger_of_one_line_at_a_time(
    fresh_services: Services, chunk_size: int, lanes: int
) -> None:
    """The file split by member into lanes applied side by side (two; three are more than the
    pool of 4 can lend: one after another): the same outcomes and ledger as its lines one by
    one in line order."""
    rt = fresh_services
    unknown = new_card_number()
    reference = await _world(rt, "one by one")
    imported = await _world(rt, "in lanes")
    before = _issued()
    expected = await _one_by_one(rt, reference, reference.file(unknown, LANE_FILE))
    between = _issued()
    done, got = await _imported(
        rt, imported, imported.file(unknown, LANE_FILE), chunk_size=chunk_size, lanes=lanes
    )
    assert _issued() - between == between - before > 0
    assert done.lanes is not None and len(done.lanes) == lanes  # it ran in lanes
    assert sum(done.lanes) == done.position == len(LANE_FILE)
    assert got == expected
    assert await _ledger(rt, imported) == await _ledger(rt, reference) != {}
    await assert_invariants(rt.engine)


async def test_a_key_or_order_of_two_members_keeps_the_import_in_one_lane(
    fresh_services: Services,
) -> None:
    """FILE uses member 0's order and key for member 2's earns: split by member (into as many
    lanes as put them apart), those lines would race in two lanes; the import runs in one
    lane, in line order, as one by one."""
    rt = fresh_services
    unknown = new_card_number()
    reference = await _world(rt, "one by one")
    imported = await _world(rt, "one lane")
    lines = imports.data_lines(imported.file(unknown), "csv")
    lanes = 64  # more lanes than the file has members, cards and orders: each its own lane
    expected = await _one_by_one(rt, reference, reference.file(unknown))
    done, got = await _imported(rt, imported, imported.file(unknown), chunk_size=5, lanes=lanes)
    assert done.lanes == [len(lines)]  # one lane
    assert got == expected
    assert await _ledger(rt, imported) == await _ledger(rt, reference) != {}


async def test_a_slow_line_sharing_a_key_with_an_earlier_line_starts_the_next_chunk(
    fresh_services: Services,
) -> None:
    """Line 15 (an offer with uses, the key of line 2) must run after line 2 has committed:
    planned in one chunk of the whole file, the chunk ends before it."""
    rt = fresh_services
    world = await _world(rt, "cut")
    body = world.file(new_card_number())
    async with rt.engine.begin() as conn:
        record = await store.create(
            conn,
            partner_id=world.partner,
            actor="client",
            fmt="csv",
            body=body,
            lines=len(FILE),
        )
    plan = await imports._plan(rt, record, imports.data_lines(body, "csv"))
    assert plan.end == 13  # lines 2..14; line 15 starts the next chunk
    # the first earn of each key and order in the statement; those sharing one after it, alone
    assert [e.line for e in plan.first] == [2, 10]
    assert [e.line for e in plan.rest] == [11, 12, 13]


async def test_a_lane_advances_only_from_where_it_stands(fresh_services: Services) -> None:
    """A lane's progress moves from its recorded position only (a second runner of the same
    chunk records nothing); its lines count in `position`; lanes are set once."""
    rt = fresh_services
    world = await _world(rt, "advance")
    body = world.file(new_card_number(), LANE_FILE)
    async with rt.engine.begin() as conn:
        record = await store.create(
            conn, partner_id=world.partner, actor="client", fmt="csv", body=body, lines=25
        )
        lane_map = bytes([0, 1] * 12 + [0])
        assert await store.start_lanes(
            conn, import_id=record.id, lanes=[0, 0], lane_map=lane_map
        ) == ([0, 0], lane_map)
        assert await store.start_lanes(conn, import_id=record.id, lanes=[7]) == ([0, 0], lane_map)
        with pytest.raises(ValueError, match="256"):
            await store.start_lanes(conn, import_id=record.id, lanes=[0] * 257, lane_map=b"\0")
        moved: dict[str, Any] = {
            "import_id": record.id,
            "lane": 1,
            "applied": 3,
            "replayed": 0,
            "rejected": [],
        }
        assert await store.advance(conn, start=0, end=3, **moved)
        assert not await store.advance(conn, start=0, end=4, **moved)  # lane 1 is at 3
        assert await store.advance(conn, start=3, end=5, **moved)
        got = await store.get(conn, import_id=record.id)
    assert got is not None
    assert (got.lanes, got.position, got.applied, got.status) == ([0, 5], 5, 6, "running")
    lines = imports.data_lines(body, "csv")
    assert [len(part) for part in imports.deal(lines, lane_map, 2)] == [13, 12]
    with pytest.raises(ValueError, match="does not fit"):
        imports.deal(lines[1:], lane_map, 2)  # a map of another file
    with pytest.raises(ValueError, match="256"):
        await imports.lane_map(rt, record, lines, 257)


async def test_a_refund_runs_in_the_lane_of_its_orders_member(fresh_services: Services) -> None:
    """A refund line has no card: its order's member places it (an earn of the file, else the
    ledger's), so that it runs in line order with that member's earns."""
    rt = fresh_services
    world = await _world(rt, "refund lane")  # member 0 earned order "pre" before the file
    rows = [f"earn,a{i},{{c{i}}},10.00,RUB,shop,a{i}" for i in range(4)]
    rows += ["refund,pre,,10.00,RUB,,r-pre", "refund,a1,,5.00,RUB,,r-a1"]
    body = world.file(new_card_number(), rows)
    async with rt.engine.begin() as conn:
        record = await store.create(
            conn, partner_id=world.partner, actor="client", fmt="csv", body=body, lines=6
        )
    lines = imports.data_lines(body, "csv")
    m0, m1 = world.members[0].bytes, world.members[1].bytes
    # As many lanes as put each refund's order apart from its member (placed by the order, the
    # refund would land elsewhere).
    n = next(
        n
        for n in range(2, 1000)
        if imports.lane_of(m0, n) != imports.lane_of("pre", n)
        and imports.lane_of(m1, n) != imports.lane_of("a1", n)
    )
    # Placed by hash (as imports started before lane maps were stored are split again).
    split = await imports.split_lanes(rt, record, lines, n, balanced=False)
    assert split is not None
    lane = {line: k for k, part in enumerate(split) for line, _ in part}
    assert lane[6] == lane[2] == imports.lane_of(m0, n)  # refund of "pre": member 0's lane
    assert lane[7] == lane[3] == imports.lane_of(m1, n)  # refund of a1: member 1's lane


async def test_lanes_get_as_many_lines_as_whole_members_allow(fresh_services: Services) -> None:
    """Members of 6, 3, 2 and 1 lines: two lanes of 6 lines each, three of 6, 3 and 3; each
    member's lines in one lane, in line order."""
    rt = fresh_services
    world = await _world(rt, "balanced")
    owners = [0] * 6 + [1] * 3 + [2] * 2 + [3]
    rows = [f"earn,b{i},{{c{m}}},10.00,RUB,shop,b{i}" for i, m in enumerate(owners)]
    body = world.file(new_card_number(), rows)
    async with rt.engine.begin() as conn:
        record = await store.create(
            conn, partner_id=world.partner, actor="client", fmt="csv", body=body, lines=len(rows)
        )
    lines = imports.data_lines(body, "csv")
    for n, sizes in ((2, [6, 6]), (3, [6, 3, 3])):
        split = await imports.split_lanes(rt, record, lines, n)
        assert split is not None
        assert [len(part) for part in split] == sizes
        for part in split:
            assert [line for line, _ in part] == sorted(line for line, _ in part)
        lane_of_line = {line: k for k, part in enumerate(split) for line, _ in part}
        for m in range(4):
            assert len({lane_of_line[i + 2] for i, o in enumerate(owners) if o == m}) == 1


async def test_lines_that_do_not_parse_keep_a_file_in_lanes(fresh_services: Services) -> None:
    """A bad line is rejected wherever it runs and shares no key or order with any other: a
    large file with a few bad lines still splits into lanes (they used to count as sharing one
    key, and a file whose bad lines fell in two lanes ran in one)."""
    rt = fresh_services
    world = await _world(rt, "bad lanes")
    rows = [f"earn,g{i},{{c{i % 4}}},10.00,RUB,shop,g{i}" for i in range(8)]
    rows += ["earn,only three,fields", "not,a,line", "x", "earn,g9,,,,,,,,"]
    body = world.file(new_card_number(), rows)
    async with rt.engine.begin() as conn:
        record = await store.create(
            conn, partner_id=world.partner, actor="client", fmt="csv", body=body, lines=len(rows)
        )
    lines = imports.data_lines(body, "csv")
    lanes = await imports.lane_map(rt, record, lines, 2)
    assert lanes is not None
    bad = {lanes[i] for i in range(8, 12)}
    assert bad == {0, 1}  # the bad lines, each a unit of its own, dealt to both lanes
    # a good line's key shared across lanes still keeps the file in one lane
    shared = [*rows[:8], "earn,g100,{c1},10.00,RUB,shop,g0"]
    body = world.file(new_card_number(), shared)
    async with rt.engine.begin() as conn:
        record = await store.create(
            conn, partner_id=world.partner, actor="client", fmt="csv", body=body, lines=9
        )
    split = await imports.lane_map(rt, record, imports.data_lines(body, "csv"), 2)
    assert split is None


async def _long_chunk(
    rt: Services, name: str, n: int
) -> tuple[ImportRecord, list[tuple[int, bytes]]]:
    """A stored file of `n` plain earn lines of a new world's four members, and its lines; the
    partner's terms and the cards cached by a first small plan."""
    world = await _world(rt, name)
    rows = [f"earn,t{i},{{c{i % 4}}},10.00,RUB,shop,t{i}" for i in range(n)]
    body = world.file(new_card_number(), rows)
    async with rt.engine.begin() as conn:
        record = await store.create(
            conn, partner_id=world.partner, actor="client", fmt="csv", body=body, lines=n
        )
    part = imports.data_lines(body, "csv")
    await imports._plan(rt, record, part[:10])
    return record, part


async def test_planning_a_chunk_gives_the_event_loop_turns(fresh_services: Services) -> None:
    """A chunk's plan (parse, price, the statement's parameter) hands the event loop a turn every
    `STEP` lines: the other lanes' statements and the requests the process serves are not held
    up for the whole chunk."""
    rt = fresh_services
    n = 3 * imports.STEP
    record, part = await _long_chunk(rt, "turns", n)

    turns = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = turns
    plan = await imports._plan(rt, record, part)
    during = turns - before
    stop.set()
    await task
    assert len(plan.first) == n
    # parse, price, prepare: each gives a turn after every STEP lines (2 each at 3 * STEP)
    assert during >= 6, during


async def test_the_lanes_plans_run_one_at_a_time_first_asked_first(
    fresh_services: Services,
) -> None:
    """A lane's plan of 3 * STEP lines, asked first, is done before a one-line plan asked after
    it starts (side by side, the short one would finish first): the lane waiting longest gets
    its statement first, rather than every lane's plan finishing together, late."""
    rt = fresh_services
    record, part = await _long_chunk(rt, "turns in order", 3 * imports.STEP)
    turns = asyncio.Lock()
    finished: list[str] = []

    async def plan(name: str, lines: list[tuple[int, bytes]]) -> None:
        await imports._plan_in_turn(rt, record, lines, turns)
        finished.append(name)

    long = asyncio.create_task(plan("long", part))
    await asyncio.sleep(0)  # the long plan has asked (and started)
    short = asyncio.create_task(plan("short", part[:1]))
    await asyncio.gather(long, short)
    assert finished == ["long", "short"]
