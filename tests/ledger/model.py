"""A small, independent model of DOMAIN.md "Ledger" (and the bonuses, reward spends and
transfers of "Rewards" and "Bonuses, ... transfers"), for the stateful test (test_stateful.py).

It shares no code with the service:
- lots are spent earliest expiry first, ties by creation order; points are pending until
  `available_at` and gone at `expires_at` (the expiry job moves what is left to breakage);
- a member's debt is repaid first by later earnings, bonuses and transfers received;
- a bonus is a lot available at once, issued by a partner or the operator (issuer None);
- a reward spend takes available points at once, FIFO, for the delivering partner;
- a transfer takes the sender's available points FIFO; the first of them repay the receiver's
  debt, the rest become the receiver's lots with the issuer, earn and dates of the lots they
  came from; a sender gives at most the daily limit in any 24 hours;
- a reversal takes from the earn's own lot, then other pending lots, then available lots FIFO,
  never from held points; the shortfall becomes debt;
- capture takes the reserved points in reservation order and releases the rest; returned points
  go back into the lots they were captured from, last captured first;
- a hold is live until `expires_at`, then releases its points by itself.

An operation raises the error the service must raise (having changed nothing), or applies
itself (at once, or through the `apply` it returns once the service has succeeded) and returns
what the result must say.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ledger.errors import (
    DuplicateOrder,
    HoldNotActive,
    InsufficientPoints,
    LedgerValidation,
    TransferLimitExceeded,
)

N_MEMBERS = 3
N_PARTNERS = 3
EXPIRING_WITHIN = timedelta(days=30)  # ledger.balance's default horizon
TRANSFER_WINDOW = timedelta(hours=24)  # DOMAIN.md: a daily limit per sender


def add_months(t: datetime, months: int) -> datetime:
    """Calendar months later, the day clamped to the month's end (Jan 31 + 1 = Feb 28/29)."""
    m = t.month - 1 + months
    year, month = t.year + m // 12, m % 12 + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


@dataclass(eq=False)
class MLot:
    seq: int  # creation order
    tx: uuid.UUID  # the earn or bonus that issued its points (a transferred lot: the original)
    member: int
    issuer: int | None  # None: the operator
    points: int
    remaining: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime
    reversed: int = 0
    bonus: bool = False
    origin: MLot | None = None  # the lot a transfer took its points from
    transfer_tx: uuid.UUID | None = None

    def fifo(self) -> tuple[datetime, datetime, int]:
        return (self.expires_at, self.earned_at, self.seq)

    def key(self) -> tuple[Any, ...]:
        """What tells lots apart, in the model and in the database alike."""
        return (self.tx, self.transfer_tx, self.origin.key() if self.origin else None)


@dataclass(eq=False)
class MAlloc:
    lot: MLot
    points: int
    captured: int = 0
    returned: int = 0


@dataclass(eq=False)
class MHold:
    id: uuid.UUID
    member: int
    partner: int
    points: int
    expires_at: datetime
    allocs: list[MAlloc]
    status: str = "active"  # active | captured | voided | expired
    captured: int = 0
    returned: int = 0


@dataclass
class MBalance:
    wallet: int
    available: int
    pending: int
    on_hold: int
    expiring: int
    debt: int


@dataclass
class MFunding:
    """Account balances of this run: per partner what it issued (negative, net of reversals)
    and accepted; what the operator issued (negative)."""

    issuance: list[int] = field(default_factory=lambda: [0] * N_PARTNERS)
    redemption: list[int] = field(default_factory=lambda: [0] * N_PARTNERS)
    promotions: int = 0


class Model:
    """The ledger of DOMAIN.md, in memory."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.lots: list[MLot] = []
        self.holds: list[MHold] = []
        self.debt = [0] * N_MEMBERS
        self.earned_refs: set[tuple[int, str]] = set()
        self.timed_out: list[MLot] = []  # lots that holds gave back by running out (statistics)
        self.funding = MFunding()
        self.transfers: list[tuple[int, datetime, int]] = []  # sender, when, points

    # -- reads

    def member_lots(self, m: int) -> list[MLot]:
        return [lot for lot in self.lots if lot.member == m]

    def live(self, lot: MLot) -> bool:
        return lot.expires_at > self.now

    def spendable(self, m: int) -> list[MLot]:
        lots = [
            lot
            for lot in self.member_lots(m)
            if lot.remaining > 0 and lot.available_at <= self.now and self.live(lot)
        ]
        return sorted(lots, key=MLot.fifo)

    def available(self, m: int) -> int:
        return sum(lot.remaining for lot in self.spendable(m))

    def balance(self, m: int) -> MBalance:
        live = [lot for lot in self.member_lots(m) if self.live(lot)]
        on_hold = sum(h.points for h in self.holds if h.member == m and h.status == "active")
        horizon = self.now + EXPIRING_WITHIN
        return MBalance(
            # expired points stay in the wallet until the expiry job takes them
            wallet=sum(lot.remaining for lot in self.member_lots(m)) + on_hold,
            available=sum(lot.remaining for lot in live if lot.available_at <= self.now),
            pending=sum(lot.remaining for lot in live if lot.available_at > self.now),
            on_hold=on_hold,
            expiring=sum(lot.remaining for lot in live if lot.expires_at <= horizon),
            debt=self.debt[m],
        )

    def outstanding(self) -> dict[int | None, int]:
        """Points left in lots (not counting live reservations), by issuer."""
        out: dict[int | None, int] = {}
        for lot in self.lots:
            out[lot.issuer] = out.get(lot.issuer, 0) + lot.remaining
        return {k: v for k, v in out.items() if v}

    def sent_in_window(self, m: int) -> int:
        since = self.now - TRANSFER_WINDOW
        return sum(pts for s, t, pts in self.transfers if s == m and since < t)

    # -- time

    def advance(self, delta: timedelta) -> None:
        self.now += delta
        for h in self.holds:
            if h.status == "active" and h.expires_at <= self.now:
                h.status = "expired"
                for a in h.allocs:
                    a.lot.remaining += a.points
                    self.timed_out.append(a.lot)

    # -- movements

    def _take(self, m: int, points: int) -> list[tuple[MLot, int]]:
        """The member's available points, FIFO; InsufficientPoints if short (nothing taken)."""
        available = self.available(m)
        if points > available:
            raise InsufficientPoints("not enough points", available=available)
        taken, need = [], points
        for lot in self.spendable(m):
            if need == 0:
                break
            taken.append((lot, min(lot.remaining, need)))
            need -= taken[-1][1]
        return taken

    def _issue(
        self,
        m: int,
        issuer: int | None,
        points: int,
        available_at: datetime,
        expires_at: datetime,
        *,
        bonus: bool,
    ) -> tuple[MLot, int]:
        repaid = min(points, self.debt[m])
        lot = MLot(
            seq=-1,
            tx=uuid.UUID(int=0),
            member=m,
            issuer=issuer,
            points=points,
            remaining=points - repaid,
            earned_at=self.now,
            available_at=available_at,
            expires_at=expires_at,
            bonus=bonus,
        )
        return lot, repaid

    def _issued(self, lot: MLot, repaid: int, tx: uuid.UUID) -> None:
        self.debt[lot.member] -= repaid
        lot.tx, lot.seq = tx, len(self.lots)
        self.lots.append(lot)
        if lot.issuer is None:
            self.funding.promotions -= lot.points
        else:
            self.funding.issuance[lot.issuer] -= lot.points

    def earn(
        self, m: int, p: int, points: int, hold_days: int, validity_months: int, ref: str | None
    ) -> tuple[dict[str, Any], Callable[[uuid.UUID], None]]:
        if ref is not None and (p, ref) in self.earned_refs:
            raise DuplicateOrder("this order already earned points")
        lot, repaid = self._issue(
            m,
            p,
            points,
            self.now + timedelta(days=hold_days),
            add_months(self.now, validity_months),
            bonus=False,
        )
        expected = {
            "points": points,
            "status": "pending" if hold_days > 0 else "available",
            "available_at": lot.available_at,
            "expires_at": lot.expires_at,
            "debt_repaid": repaid,
        }

        def apply(tx: uuid.UUID) -> None:
            if ref is not None:
                self.earned_refs.add((p, ref))
            self._issued(lot, repaid, tx)

        return expected, apply

    def bonus(
        self, m: int, issuer: int | None, points: int, validity_months: int
    ) -> tuple[dict[str, Any], Callable[[uuid.UUID], None]]:
        lot, repaid = self._issue(
            m, issuer, points, self.now, add_months(self.now, validity_months), bonus=True
        )
        expected = {"points": points, "expires_at": lot.expires_at, "debt_repaid": repaid}
        return expected, lambda tx: self._issued(lot, repaid, tx)

    def reward(self, m: int, p: int, points: int) -> dict[str, Any]:
        for lot, take in self._take(m, points):
            lot.remaining -= take
        self.funding.redemption[p] += points
        return {"points": points}

    def transfer(
        self, a: int, b: int, points: int, limit: int | None
    ) -> tuple[dict[str, Any], Callable[[uuid.UUID], None]]:
        if a == b:
            raise LedgerValidation("to oneself")
        if limit is not None:
            used = self.sent_in_window(a)
            if used + points > limit:
                raise TransferLimitExceeded("over the daily limit", limit=limit, used=used)
        taken = self._take(a, points)
        repaid = min(points, self.debt[b])

        def apply(tx: uuid.UUID) -> None:
            to_debt = repaid
            for lot, take in taken:  # the first points taken repay the receiver's debt
                lot.remaining -= take
                given = take - min(take, to_debt)
                to_debt -= take - given
                if given:
                    self.lots.append(
                        MLot(
                            seq=len(self.lots),
                            tx=lot.tx,
                            member=b,
                            issuer=lot.issuer,
                            points=given,
                            remaining=given,
                            earned_at=lot.earned_at,
                            available_at=lot.available_at,
                            expires_at=lot.expires_at,
                            origin=lot,
                            transfer_tx=tx,
                        )
                    )
            self.debt[b] -= repaid
            self.transfers.append((a, self.now, points))

        return {"points": points, "debt_repaid": repaid}, apply

    def authorize(
        self, m: int, p: int, points: int, ttl: timedelta
    ) -> tuple[dict[str, Any], Callable[[uuid.UUID], None]]:
        allocs = [MAlloc(lot, take) for lot, take in self._take(m, points)]
        expected = {"points": points, "expires_at": self.now + ttl, "status": "active"}

        def apply(hold_id: uuid.UUID) -> None:
            for a in allocs:
                a.lot.remaining -= a.points
            self.holds.append(MHold(hold_id, m, p, points, self.now + ttl, allocs))

        return expected, apply

    def capture(self, hold: MHold, points: int) -> dict[str, Any]:
        if hold.status != "active":
            raise HoldNotActive(hold.status)
        if points > hold.points:
            raise LedgerValidation("more than the hold")
        left = points
        for a in hold.allocs:  # in reservation order; the rest goes back to its lot
            a.captured = min(a.points, left)
            left -= a.captured
            a.lot.remaining += a.points - a.captured
        hold.status, hold.captured = "captured", points
        self.funding.redemption[hold.partner] += points
        return {"hold_id": hold.id, "points": points, "released": hold.points - points}

    def void(self, hold: MHold) -> dict[str, Any]:
        if hold.status != "active":
            raise HoldNotActive(hold.status)
        for a in hold.allocs:
            a.lot.remaining += a.points
        hold.status = "voided"
        return {"hold_id": hold.id, "released": hold.points}

    def reverse(self, lot: MLot, points: int) -> dict[str, Any]:
        if lot.reversed + points > lot.points:
            raise LedgerValidation("more than what is left of the earn")
        sources = [x for x in self.member_lots(lot.member) if x.remaining > 0 and self.live(x)]
        # its own lot, then pending lots, then available ones; each group FIFO
        sources.sort(key=lambda x: (x is not lot, x.available_at <= self.now, *x.fifo()))
        need = points
        for x in sources:
            take = min(x.remaining, need)
            x.remaining -= take
            need -= take
        lot.reversed += points
        self.debt[lot.member] += need
        assert lot.issuer is not None
        self.funding.issuance[lot.issuer] += points
        return {"points": points, "from_wallet": points - need, "to_debt": need}

    def return_points(self, hold: MHold, points: int) -> dict[str, Any]:
        if hold.status != "captured":
            raise HoldNotActive(hold.status)
        if hold.returned + points > hold.captured:
            raise LedgerValidation("more than what is left of the capture")
        left = points
        for a in reversed(hold.allocs):  # last captured first
            back = min(a.captured - a.returned, left)
            a.returned += back
            a.lot.remaining += back
            left -= back
        hold.returned += points
        self.funding.redemption[hold.partner] -= points
        return {"hold_id": hold.id, "points": points}

    def expire(self) -> dict[str, int]:
        swept = [lot for lot in self.lots if not self.live(lot) and lot.remaining > 0]
        report = {
            "members": len({lot.member for lot in swept}),
            "lots": len(swept),
            "points": sum(lot.remaining for lot in swept),
        }
        for lot in swept:
            lot.remaining = 0
        self.timed_out = [lot for lot in self.timed_out if lot.remaining]
        return report
