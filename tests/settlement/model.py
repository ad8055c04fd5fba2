"""A pure-Python model of the coalition's points, priced, to check settlement independently.

`tests.settlement.world.World` sends each request to the real ledger service and applies it to
this model: lots (issued by a partner, or by the operator: issuer None) spent earliest-expiry
first, partial captures, voids, rewards, transfers (the receiver's lots carry the issuer, dates
and price of the points given), reversals, returns, expiry. Every event keeps the price the
DOMAIN's rule gives it, computed here from the agreements the test recorded and the order in
which it recorded them; the operator's points are valued at the point value. Nothing here reads
a settlement table.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from core.money import quantize


@dataclass
class Lot:
    idx: int
    member: uuid.UUID
    issuer: uuid.UUID | None  # None: the operator
    points: int
    remaining: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime
    price: Decimal | None  # the issue price of its earn or bonus (None: the operator's)
    earn_tx: uuid.UUID
    ref: str
    reversed: int = 0
    source: str = "earn"  # earn, bonus, or transfer (a lot given to this member)


@dataclass
class Alloc:
    lot: Lot
    points: int
    captured: int = 0
    returned: int = 0


@dataclass
class Hold:
    id: uuid.UUID
    member: uuid.UUID
    partner: uuid.UUID
    allocs: list[Alloc]
    ref: str
    captured: int = 0
    returned: int = 0
    price: Decimal | None = None  # the redemption price of its capture
    status: str = "active"


@dataclass
class Event:
    kind: str
    partner: uuid.UUID | None  # None: the operator's bonus
    points: int
    price: Decimal | None
    at: datetime
    ref: str
    tx: uuid.UUID


@dataclass
class Agreement:
    effective_from: datetime
    issue: Decimal
    redemption: Decimal
    seq: int  # when the test recorded it, in request order


@dataclass
class Model:
    point_value: Decimal = Decimal("1.00")
    lots: list[Lot] = field(default_factory=list)
    debt: dict[uuid.UUID, int] = field(default_factory=lambda: defaultdict(int))
    holds: dict[uuid.UUID, Hold] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # (issuer, redeemer, at, points, value-exact)
    matrix: list[tuple[uuid.UUID | None, uuid.UUID, datetime, int, Decimal]] = field(
        default_factory=list
    )
    # (issuer, at, points, value-exact)
    breakage: list[tuple[uuid.UUID | None, datetime, int, Decimal]] = field(default_factory=list)
    agreements: dict[uuid.UUID, list[Agreement]] = field(default_factory=lambda: defaultdict(list))
    seq: int = 0

    def price(self, partner: uuid.UUID, at: datetime) -> Agreement | None:
        known = [a for a in self.agreements[partner] if a.seq < self.seq and a.effective_from <= at]
        if not known:
            return None
        return max(known, key=lambda a: (a.effective_from, a.seq))

    def spendable(self, member: uuid.UUID, at: datetime) -> list[Lot]:
        """The member's available lots in the order they are spent (earliest expiry first)."""
        return sorted(
            (
                x
                for x in self.lots
                if x.member == member and x.remaining > 0 and x.available_at <= at < x.expires_at
            ),
            key=lambda x: (x.expires_at, x.earned_at, x.idx),
        )

    def available(self, member: uuid.UUID, at: datetime) -> int:
        return sum(lot.remaining for lot in self.spendable(member, at))

    def take(self, member: uuid.UUID, points: int, at: datetime) -> list[tuple[Lot, int]]:
        """Take `points` from the member's available lots, earliest expiry first."""
        taken, need = [], points
        for lot in self.spendable(member, at):
            if need == 0:
                break
            n = min(lot.remaining, need)
            lot.remaining -= n
            need -= n
            taken.append((lot, n))
        assert need == 0, "the test asked for more than available"
        return taken

    # Expected settlement of [start, end) -------------------------------------------------------

    def statements(self, start: datetime, end: datetime, currency: str) -> dict[uuid.UUID, dict]:
        out: dict[uuid.UUID, dict] = {}

        def row(p: uuid.UUID) -> dict:
            return out.setdefault(
                p,
                {
                    "issued": 0,
                    "reversed": 0,
                    "redeemed": 0,
                    "returned": 0,
                    "charge": Decimal(0),
                    "reimbursement": Decimal(0),
                    "breakage_points": 0,
                    "breakage_value": Decimal(0),
                },
            )

        for e in self.events:
            if not start <= e.at < end or e.partner is None:  # the operator's: no statement
                continue
            r = row(e.partner)
            value = e.points * (e.price or Decimal(0))
            if e.kind in ("earn", "bonus"):
                r["issued"] += e.points
                r["charge"] += value
            elif e.kind == "reversal":
                r["reversed"] += e.points
                r["charge"] -= value
            elif e.kind in ("capture", "reward"):
                r["redeemed"] += e.points
                r["reimbursement"] += value
            elif e.kind == "return":
                r["returned"] += e.points
                r["reimbursement"] -= value
        for issuer, at, points, value in self.breakage:
            if start <= at < end and issuer is not None:
                r = row(issuer)
                r["breakage_points"] += points
                r["breakage_value"] += value
        for r in out.values():
            r["charge"] = quantize(r["charge"], currency)
            r["reimbursement"] = quantize(r["reimbursement"], currency)
            r["net"] = r["reimbursement"] - r["charge"]
            r["breakage_value"] = quantize(r["breakage_value"], currency)
        return out

    def operator(self, start: datetime, end: datetime, currency: str) -> tuple[int, int, Decimal]:
        """The operator's own points in [start, end): issued, expired, their value."""
        issued = sum(
            e.points
            for e in self.events
            if e.kind == "bonus" and e.partner is None and start <= e.at < end
        )
        expired = [(p, v) for i, at, p, v in self.breakage if i is None and start <= at < end]
        return (
            issued,
            sum(p for p, _ in expired),
            quantize(sum((v for _, v in expired), Decimal(0)), currency),
        )

    def matrix_cells(self, start: datetime, end: datetime, currency: str) -> dict[tuple, tuple]:
        cells: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0)])
        for issuer, redeemer, at, points, value in self.matrix:
            if start <= at < end:
                cells[(issuer, redeemer)][0] += points
                cells[(issuer, redeemer)][1] += value
        return {
            k: (v[0], quantize(v[1], currency)) for k, v in cells.items() if v[0] != 0 or v[1] != 0
        }

    def outstanding(self, at: datetime) -> dict[uuid.UUID | None, int]:
        """Points left in lots earned before `at` and not expired by then (model state now)."""
        out: dict[uuid.UUID | None, int] = defaultdict(int)
        for lot in self.lots:
            if lot.earned_at < at < lot.expires_at and lot.remaining:
                out[lot.issuer] += lot.remaining
        return {k: v for k, v in out.items() if v}

    def expire(self, at: datetime) -> int:
        """What is left of the lots expired by `at` goes to breakage, at each lot's issue price
        (the operator's at the point value)."""
        total = 0
        for lot in self.lots:
            if lot.expires_at <= at and lot.remaining > 0:
                price = self.point_value if lot.issuer is None else (lot.price or Decimal(0))
                self.breakage.append((lot.issuer, at, lot.remaining, lot.remaining * price))
                total += lot.remaining
                lot.remaining = 0
        self.seq += 1
        return total
