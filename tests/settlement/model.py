"""A pure-Python model of the coalition's points, priced, to check settlement independently.

`World` sends each request to the real ledger service (one committed unit of work per call, as
the API does) and applies the same request to the model: lots spent earliest-expiry first,
partial captures, voids, reversals (own lot, then pending, then available lots, shortfall to
debt), returns into the lots they came from, expiry. Every event keeps the price the DOMAIN's
rule gives it, computed here from the agreements the test recorded and the order in which it
recorded them. Nothing here reads a settlement table.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from sqlalchemy.ext.asyncio import AsyncEngine

from core.money import quantize
from ledger import service as ledger
from partners import service as partners


@dataclass
class Lot:
    idx: int
    member: uuid.UUID
    issuer: uuid.UUID
    points: int
    remaining: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime
    price: Decimal | None  # the issue price of its earn
    earn_tx: uuid.UUID
    ref: str
    reversed: int = 0


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
    partner: uuid.UUID
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
    lots: list[Lot] = field(default_factory=list)
    debt: dict[uuid.UUID, int] = field(default_factory=lambda: defaultdict(int))
    holds: dict[uuid.UUID, Hold] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # (issuer, redeemer, at, points, value-exact)
    matrix: list[tuple[uuid.UUID, uuid.UUID, datetime, int, Decimal]] = field(default_factory=list)
    # (issuer, at, points, value-exact)
    breakage: list[tuple[uuid.UUID, datetime, int, Decimal]] = field(default_factory=list)
    agreements: dict[uuid.UUID, list[Agreement]] = field(default_factory=lambda: defaultdict(list))
    seq: int = 0

    def price(self, partner: uuid.UUID, at: datetime) -> Agreement | None:
        known = [a for a in self.agreements[partner] if a.seq < self.seq and a.effective_from <= at]
        if not known:
            return None
        return max(known, key=lambda a: (a.effective_from, a.seq))

    def available(self, member: uuid.UUID, at: datetime) -> int:
        return sum(
            lot.remaining
            for lot in self.lots
            if lot.member == member
            and lot.remaining > 0
            and lot.available_at <= at < lot.expires_at
        )

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
            if not start <= e.at < end:
                continue
            r = row(e.partner)
            value = e.points * (e.price or Decimal(0))
            if e.kind == "earn":
                r["issued"] += e.points
                r["charge"] += value
            elif e.kind == "reversal":
                r["reversed"] += e.points
                r["charge"] -= value
            elif e.kind == "capture":
                r["redeemed"] += e.points
                r["reimbursement"] += value
            elif e.kind == "return":
                r["returned"] += e.points
                r["reimbursement"] -= value
        for issuer, at, points, value in self.breakage:
            if start <= at < end:
                r = row(issuer)
                r["breakage_points"] += points
                r["breakage_value"] += value
        for r in out.values():
            r["charge"] = quantize(r["charge"], currency)
            r["reimbursement"] = quantize(r["reimbursement"], currency)
            r["net"] = r["reimbursement"] - r["charge"]
            r["breakage_value"] = quantize(r["breakage_value"], currency)
        return out

    def matrix_cells(self, start: datetime, end: datetime, currency: str) -> dict[tuple, tuple]:
        cells: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0)])
        for issuer, redeemer, at, points, value in self.matrix:
            if start <= at < end:
                cells[(issuer, redeemer)][0] += points
                cells[(issuer, redeemer)][1] += value
        return {
            k: (v[0], quantize(v[1], currency)) for k, v in cells.items() if v[0] != 0 or v[1] != 0
        }

    def outstanding(self, at: datetime) -> dict[uuid.UUID, int]:
        """Points left in lots earned before `at` and not expired by then (model state now)."""
        out: dict[uuid.UUID, int] = defaultdict(int)
        for lot in self.lots:
            if lot.earned_at < at < lot.expires_at and lot.remaining:
                out[lot.issuer] += lot.remaining
        return {k: v for k, v in out.items() if v}


class World:
    """Each request goes to the real ledger (committed) and to the model."""

    def __init__(self, engine: AsyncEngine, currency: str = "RUB") -> None:
        self.engine = engine
        self.model = Model()
        self.currency = currency
        self.keys = 0

    def _key(self, what: str) -> str:
        self.keys += 1
        return f"{what}-{self.keys}"

    async def agreement(
        self, partner: uuid.UUID, issue: str, redemption: str, effective_from: datetime
    ) -> None:
        async with self.engine.begin() as conn:
            await partners.set_agreement(
                conn,
                partner_id=partner,
                issue_price=issue,
                redemption_price=redemption,
                effective_from=effective_from,
                currency=self.currency,
                actor="operator",
            )
        self.model.seq += 1
        self.model.agreements[partner].append(
            Agreement(effective_from, Decimal(issue), Decimal(redemption), self.model.seq)
        )
        self.model.seq += 1

    async def earn(
        self,
        member: uuid.UUID,
        partner: uuid.UUID,
        points: int,
        at: datetime,
        *,
        validity_months: int = 36,
        hold_days: int = 0,
    ) -> uuid.UUID:
        ref = self._key("order")
        async with self.engine.begin() as conn:
            r = await ledger.earn(
                conn,
                actor=f"partner:{partner}",
                idempotency_key=self._key("earn"),
                member_id=member,
                partner_id=partner,
                points=points,
                at=at,
                ref=ref,
                hold_days=hold_days,
                validity_months=validity_months,
            )
        m = self.model
        ag = m.price(partner, at)
        price = ag.issue if ag else None
        repaid = min(points, m.debt[member])
        m.debt[member] -= repaid
        m.lots.append(
            Lot(
                len(m.lots),
                member,
                partner,
                points,
                points - repaid,
                at,
                at + timedelta(days=hold_days),
                at + relativedelta(months=validity_months),
                price,
                r.transaction_id,
                ref,
            )
        )
        m.events.append(Event("earn", partner, points, price, at, ref, r.transaction_id))
        m.seq += 1
        return r.transaction_id

    async def redeem(
        self, member: uuid.UUID, partner: uuid.UUID, points: int, capture: int | None, at: datetime
    ) -> uuid.UUID:
        """Authorize `points`, then capture `capture` of them (None: void)."""
        ref = self._key("order")
        async with self.engine.begin() as conn:
            h = await ledger.authorize(
                conn,
                actor=f"partner:{partner}",
                idempotency_key=self._key("auth"),
                member_id=member,
                partner_id=partner,
                points=points,
                at=at,
                ref=ref,
            )
        m = self.model
        m.seq += 1
        lots = sorted(
            (
                x
                for x in m.lots
                if x.member == member and x.remaining > 0 and x.available_at <= at < x.expires_at
            ),
            key=lambda x: (x.expires_at, x.earned_at, x.idx),
        )
        allocs, need = [], points
        for lot in lots:
            if need == 0:
                break
            take = min(lot.remaining, need)
            lot.remaining -= take
            need -= take
            allocs.append(Alloc(lot, take))
        assert need == 0, "the test asked for more than available"
        hold = Hold(h.hold_id, member, partner, allocs, ref)
        m.holds[h.hold_id] = hold
        if capture is None:
            async with self.engine.begin() as conn:
                await ledger.void(
                    conn,
                    actor=f"partner:{partner}",
                    idempotency_key=self._key("void"),
                    partner_id=partner,
                    hold_id=h.hold_id,
                    at=at,
                )
            for a in allocs:
                a.lot.remaining += a.points
            hold.status = "voided"
            m.seq += 1
            return h.hold_id
        async with self.engine.begin() as conn:
            c = await ledger.capture(
                conn,
                actor=f"partner:{partner}",
                idempotency_key=self._key("capture"),
                partner_id=partner,
                hold_id=h.hold_id,
                points=capture,
                at=at,
            )
        ag = m.price(partner, at)
        hold.price = ag.redemption if ag else None
        hold.captured, hold.status = capture, "captured"
        left = capture
        for a in allocs:
            cap = min(a.points, left)
            left -= cap
            a.captured = cap
            a.lot.remaining += a.points - cap
            if cap:
                m.matrix.append((a.lot.issuer, partner, at, cap, cap * (hold.price or Decimal(0))))
        m.events.append(Event("capture", partner, capture, hold.price, at, ref, c.transaction_id))
        m.seq += 1
        return h.hold_id

    async def reverse(self, earn_tx: uuid.UUID, points: int, at: datetime) -> uuid.UUID:
        m = self.model
        own = next(x for x in m.lots if x.earn_tx == earn_tx)
        async with self.engine.begin() as conn:
            r = await ledger.reverse_earn(
                conn,
                actor=f"partner:{own.issuer}",
                idempotency_key=self._key("rev"),
                partner_id=own.issuer,
                earn_transaction_id=earn_tx,
                points=points,
                at=at,
                ref=own.ref,
            )
        lots = sorted(
            (x for x in m.lots if x.member == own.member and x.remaining > 0 and x.expires_at > at),
            key=lambda x: (x is not own, not x.available_at > at, x.expires_at, x.earned_at, x.idx),
        )
        need = points
        for lot in lots:
            if need == 0:
                break
            take = min(lot.remaining, need)
            lot.remaining -= take
            need -= take
        m.debt[own.member] += need
        own.reversed += points
        assert (r.from_wallet, r.to_debt) == (points - need, need)
        m.events.append(
            Event("reversal", own.issuer, points, own.price, at, own.ref, r.transaction_id)
        )
        m.seq += 1
        return r.transaction_id

    async def return_points(self, hold_id: uuid.UUID, points: int, at: datetime) -> uuid.UUID:
        m = self.model
        hold = m.holds[hold_id]
        async with self.engine.begin() as conn:
            r = await ledger.return_points(
                conn,
                actor=f"partner:{hold.partner}",
                idempotency_key=self._key("ret"),
                partner_id=hold.partner,
                hold_id=hold_id,
                points=points,
                at=at,
                ref=hold.ref,
            )
        need = points
        for a in reversed(hold.allocs):
            if need == 0:
                break
            back = min(a.captured - a.returned, need)
            if back <= 0:
                continue
            a.returned += back
            a.lot.remaining += back
            need -= back
            m.matrix.append(
                (a.lot.issuer, hold.partner, at, -back, -back * (hold.price or Decimal(0)))
            )
        assert need == 0
        hold.returned += points
        m.events.append(
            Event("return", hold.partner, points, hold.price, at, hold.ref, r.transaction_id)
        )
        m.seq += 1
        return r.transaction_id

    async def expire(self, at: datetime) -> int:
        report = await ledger.expire_points(self.engine, at=at)
        self.model_expire(at)
        return report.points

    def model_expire(self, at: datetime) -> int:
        m = self.model
        total = 0
        for lot in m.lots:
            if lot.expires_at <= at and lot.remaining > 0:
                m.breakage.append(
                    (lot.issuer, at, lot.remaining, lot.remaining * (lot.price or Decimal(0)))
                )
                total += lot.remaining
                lot.remaining = 0
        m.seq += 1
        return total
