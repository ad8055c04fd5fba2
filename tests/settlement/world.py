"""The requests of a settlement test: each goes to the real ledger service (one committed unit
of work per call, as the API does) and to the model (tests/settlement/model.py)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import service as ledger
from partners import service as partners
from tests.settlement.model import Agreement, Alloc, Event, Hold, Lot, Model


class World:
    """Each request goes to the real ledger (committed) and to the model."""

    def __init__(
        self, engine: AsyncEngine, currency: str = "RUB", point_value: Decimal = Decimal("1.00")
    ) -> None:
        self.engine = engine
        self.model = Model(point_value=point_value)
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
        allocs = [Alloc(lot, n) for lot, n in m.take(member, points, at)]
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

    async def bonus(
        self,
        member: uuid.UUID,
        issuer: uuid.UUID | None,
        points: int,
        at: datetime,
        *,
        validity_months: int = 36,
    ) -> uuid.UUID:
        """A bonus funded by `issuer` (a review), or by the operator (None: sign-up, referral)."""
        ref = self._key("bonus")
        actor = "operator" if issuer is None else f"partner:{issuer}"
        async with self.engine.begin() as conn:
            r = await ledger.award_bonus(
                conn,
                ledger.BonusRequest(
                    actor=actor,
                    key_space=actor,
                    idempotency_key=ref,
                    digest=ref,
                    member_id=member,
                    issuer_id=issuer,
                    points=points,
                    reason="review" if issuer else "signup",
                    ref=ref,
                    at=at,
                    validity_months=validity_months,
                ),
            )
        m = self.model
        ag = m.price(issuer, at) if issuer is not None else None
        price = ag.issue if ag else None
        repaid = min(points, m.debt[member])
        m.debt[member] -= repaid
        expires = at + relativedelta(months=validity_months)
        m.lots.append(
            Lot(
                len(m.lots),
                member,
                issuer,
                points,
                points - repaid,
                at,
                at,
                expires,
                price,
                r.transaction_id,
                ref,
                source="bonus",
            )
        )
        m.events.append(Event("bonus", issuer, points, price, at, ref, r.transaction_id))
        m.seq += 1
        return r.transaction_id

    async def reward(
        self, member: uuid.UUID, partner: uuid.UUID, points: int, at: datetime
    ) -> uuid.UUID:
        """A reward of `partner` paid with `points` at once, earliest expiry first."""
        ref = self._key("reward")
        async with self.engine.begin() as conn:
            r = await ledger.redeem_reward_points(
                conn,
                ledger.RewardSpendRequest(
                    actor=f"member:{member}",
                    key_space=f"member:{member}",
                    idempotency_key=ref,
                    digest=ref,
                    member_id=member,
                    partner_id=partner,
                    points=points,
                    ref=ref,
                    at=at,
                ),
            )
        m = self.model
        ag = m.price(partner, at)
        price = ag.redemption if ag else None
        for lot, n in m.take(member, points, at):
            m.matrix.append((lot.issuer, partner, at, n, n * (price or Decimal(0))))
        m.events.append(Event("reward", partner, points, price, at, ref, r.transaction_id))
        m.seq += 1
        return r.transaction_id

    async def transfer(
        self, sender: uuid.UUID, receiver: uuid.UUID, points: int, at: datetime
    ) -> uuid.UUID:
        """Points given to another member: the receiver's debt is repaid first from the first
        points taken; the rest become lots carrying the issuer, dates and price of their own."""
        ref = self._key("transfer")
        async with self.engine.begin() as conn:
            r = await ledger.transfer_points(
                conn,
                ledger.TransferRequest(
                    actor=f"member:{sender}",
                    key_space=f"member:{sender}",
                    idempotency_key=ref,
                    digest=ref,
                    from_member_id=sender,
                    to_member_id=receiver,
                    points=points,
                    daily_limit=None,
                    at=at,
                ),
            )
        m = self.model
        repaid = min(points, m.debt[receiver])
        assert r.debt_repaid == repaid
        m.debt[receiver] -= repaid
        prior = 0
        for lot, n in m.take(sender, points, at):
            given = n - max(0, min(n, repaid - prior))
            prior += n
            if given:
                m.lots.append(
                    Lot(
                        len(m.lots),
                        receiver,
                        lot.issuer,
                        given,
                        given,
                        lot.earned_at,
                        lot.available_at,
                        lot.expires_at,
                        lot.price,
                        lot.earn_tx,
                        lot.ref,
                        source="transfer",
                    )
                )
        m.seq += 1
        return r.transaction_id

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
        return self.model.expire(at)
