"""Partners: the registry."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from sqlalchemy import ARRAY, any_, bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import utcnow
from core.errors import ValidationError
from core.ids import uuid7
from core.money import currency_code
from core.tables import table
from ledger import service as ledger
from partners.errors import NoAgreement, PartnerNotFound
from partners.models import Agreement, EarnRule, Partner

_partners = table(Partner)
_agreements = table(Agreement)
_earn_rules = table(EarnRule)


@dataclass(frozen=True)
class PartnerRecord:
    id: uuid.UUID
    name: str
    category: str
    currency: str
    hold_days: int


# The columns of a PartnerRecord, in its order.
_PARTNER = select(
    _partners.c.id,
    _partners.c.name,
    _partners.c.category,
    _partners.c.currency,
    _partners.c.hold_days,
)


async def create(
    conn: AsyncConnection, *, name: str, category: str, currency: str, hold_days: int = 0
) -> PartnerRecord:
    """Register a partner and open its issuance and redemption accounts."""
    name, category, currency = name.strip(), category.strip(), currency.strip().upper()
    if not name or len(name) > 200:
        raise ValidationError("name must be 1..200 characters")
    if not category or len(category) > 100:
        raise ValidationError("category must be 1..100 characters")
    currency = currency_code(currency)  # a current ISO 4217 code, not any three letters
    if not 0 <= hold_days <= 365:
        raise ValidationError("hold_days must be between 0 and 365")
    partner_id = uuid7()
    await conn.execute(
        insert(_partners).values(
            id=partner_id, name=name, category=category, currency=currency, hold_days=hold_days
        )
    )
    await ledger.open_partner_accounts(conn, partner_id=partner_id)
    return PartnerRecord(partner_id, name, category, currency, hold_days)


async def get(conn: AsyncConnection, *, partner_id: uuid.UUID) -> PartnerRecord:
    """One partner by id."""
    row = (await conn.execute(_PARTNER.where(_partners.c.id == partner_id))).one_or_none()
    if row is None:
        raise PartnerNotFound(f"partner {partner_id} not found")
    return PartnerRecord(*row)


# ---------------------------------------------------------------------------------------------
# Agreements (prices per point, effective-dated and bitemporal)

MAX_PRICE = Decimal("1000000")
_PLAIN_DECIMAL = re.compile(r"[+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


@dataclass(frozen=True)
class AgreementRecord:
    id: uuid.UUID
    partner_id: uuid.UUID
    issue_price: Decimal
    redemption_price: Decimal
    currency: str
    effective_from: datetime
    recorded_at: datetime


# The columns of an AgreementRecord, in its order.
_AGREEMENT = (
    _agreements.c.id,
    _agreements.c.partner_id,
    _agreements.c.issue_price,
    _agreements.c.redemption_price,
    _agreements.c.currency,
    _agreements.c.effective_from,
    _agreements.c.recorded_at,
)


def _decimal(
    value: Decimal | str, what: str, *, maximum: Decimal, places: int = 8, positive: bool = False
) -> Decimal:
    """A plain decimal in [0, maximum] ((0, maximum] if `positive`) with at most `places` digits."""
    text_ = str(value).strip()
    if isinstance(value, str) and not _PLAIN_DECIMAL.fullmatch(text_):
        raise ValidationError(f"{what} is not a decimal number")
    try:
        number = Decimal(text_)
    except (InvalidOperation, ValueError):
        raise ValidationError(f"{what} is not a decimal number") from None
    low = "0 (excluded)" if positive else "0"
    if not number.is_finite() or number < 0 or (positive and number == 0) or number > maximum:
        raise ValidationError(f"{what} must be between {low} and {maximum}")
    if number != number.quantize(Decimal(1).scaleb(-places)):
        raise ValidationError(f"{what} has more than {places} decimal places")
    return number


async def set_agreement(
    conn: AsyncConnection,
    *,
    partner_id: uuid.UUID,
    issue_price: Decimal | str,
    redemption_price: Decimal | str,
    effective_from: datetime,
    currency: str,
    actor: str,
) -> AgreementRecord:
    """Record prices in force from `effective_from`. Never reprices events already recorded."""
    await get(conn, partner_id=partner_id)
    if effective_from.tzinfo is None:
        raise ValidationError("effectiveFrom must carry a time zone")
    currency = currency_code(currency)
    issue = _decimal(issue_price, "issuePrice", maximum=MAX_PRICE)
    redemption = _decimal(redemption_price, "redemptionPrice", maximum=MAX_PRICE)
    # recorded_at is the database's transaction time, the clock ledger events are recorded on:
    # an agreement entered in the same unit of work as an event is in force for it.
    row = (
        await conn.execute(
            insert(_agreements)
            .values(
                id=uuid7(),
                partner_id=partner_id,
                issue_price=issue,
                redemption_price=redemption,
                currency=currency,
                effective_from=effective_from,
                recorded_at=func.now(),
                actor=actor,
            )
            .returning(*_AGREEMENT)
        )
    ).one()
    return AgreementRecord(*row)


async def agreements(conn: AsyncConnection, *, partner_id: uuid.UUID) -> list[AgreementRecord]:
    """A partner's agreements, newest effective first."""
    rows = await conn.execute(
        select(*_AGREEMENT)
        .where(_agreements.c.partner_id == partner_id)
        .order_by(_agreements.c.effective_from.desc(), _agreements.c.recorded_at.desc())
    )
    return [AgreementRecord(*r) for r in rows]


# ---------------------------------------------------------------------------------------------
# Earn rules


MAX_RATE = Decimal("10000")


@dataclass(frozen=True)
class EarnRuleRecord:
    partner_id: uuid.UUID
    base_rate: Decimal
    category_rates: dict[str, Decimal]
    hold_days: int
    max_redeem_share: Decimal
    max_points_per_transaction: int | None
    recorded_at: datetime

    def rate_for(self, category: str | None) -> Decimal:
        """A category's rate replaces the base rate; other categories earn the base rate."""
        if category is not None and category in self.category_rates:
            return self.category_rates[category]
        return self.base_rate

    def points_for(
        self, amount: Decimal, category: str | None, multiplier: Decimal = Decimal(1)
    ) -> int:
        """floor(amount x rate x multipliers), capped per transaction."""
        return base_points(
            amount, self.rate_for(category), self.max_points_per_transaction, multiplier
        )


def base_points(
    amount: Decimal, rate: Decimal, cap: int | None, multiplier: Decimal = Decimal(1)
) -> int:
    """An earn's base points: floor(amount x rate x multiplier), at most `cap`, never negative
    (the earn rule's `points_for`, and the BASE line of an earn's breakdown)."""
    points = int((amount * rate * multiplier).to_integral_value(ROUND_FLOOR))
    if cap is not None:
        points = min(points, cap)
    return max(points, 0)


async def set_earn_rule(
    conn: AsyncConnection,
    *,
    partner_id: uuid.UUID,
    base_rate: Decimal | str,
    category_rates: Mapping[str, Decimal | str] | None = None,
    hold_days: int = 0,
    max_redeem_share: Decimal | str = Decimal(1),
    max_points_per_transaction: int | None = None,
    actor: str,
) -> EarnRuleRecord:
    """Put a new earn rule in force for a partner (the previous ones stay as history)."""
    await get(conn, partner_id=partner_id)
    rates = {}
    for category, rate in (category_rates or {}).items():
        category = category.strip()
        if not category or len(category) > 100:
            raise ValidationError("category must be 1..100 characters")
        rates[category] = _decimal(rate, f"rate of {category!r}", maximum=MAX_RATE)
    if len(rates) > 200:
        raise ValidationError("at most 200 category rates")
    if not 0 <= hold_days <= 365:
        raise ValidationError("holdDays must be between 0 and 365")
    share = _decimal(
        max_redeem_share, "maxRedeemShare", maximum=Decimal(1), places=5, positive=True
    )
    if (
        max_points_per_transaction is not None
        and not 0 < max_points_per_transaction <= 1_000_000_000
    ):
        raise ValidationError("maxPointsPerTransaction must be between 1 and 1000000000")
    rule = EarnRuleRecord(
        partner_id=partner_id,
        base_rate=_decimal(base_rate, "baseRate", maximum=MAX_RATE),
        category_rates=rates,
        hold_days=hold_days,
        max_redeem_share=share,
        max_points_per_transaction=max_points_per_transaction,
        recorded_at=utcnow(),
    )
    await conn.execute(
        insert(_earn_rules).values(
            id=uuid7(),
            partner_id=partner_id,
            base_rate=rule.base_rate,
            category_rates={k: str(v) for k, v in rates.items()},
            max_points_per_transaction=max_points_per_transaction,
            hold_days=hold_days,
            max_redeem_share=share,
            recorded_at=rule.recorded_at,
            actor=actor,
        )
    )
    # The partner row carries the hold days in force, read by the earn path with the rule.
    await conn.execute(
        update(_partners).where(_partners.c.id == partner_id).values(hold_days=hold_days)
    )
    return rule


@dataclass(frozen=True)
class PartnerConfig:
    """What the earn and redeem paths need to know about a partner, read in one query."""

    partner: PartnerRecord
    rule: EarnRuleRecord | None
    # The earliest `effective_from` of the partner's agreements (None: it has none). Agreements
    # are never deleted, so one is in force at any time from this on; a cached value can only
    # miss an agreement recorded since, never admit an event it should refuse.
    agreement_from: datetime | None = None

    def require_agreement(self, at: datetime) -> None:
        """Refuse an event at `at` (an earn, a redemption) unless an agreement is in force then."""
        if self.agreement_from is None or self.agreement_from > at:
            raise NoAgreement(
                "this partner has no agreement in force: it can neither issue nor accept points"
            )


async def get_config(conn: AsyncConnection, *, partner_id: uuid.UUID) -> PartnerConfig:
    """A partner with its earn rule in force and the start of its first agreement."""
    row = (
        await conn.execute(
            text(
                """
                SELECT p.id, p.name, p.category, p.currency, p.hold_days,
                       r.base_rate, r.category_rates, r.hold_days AS rule_hold_days,
                       r.max_redeem_share, r.max_points_per_transaction, r.recorded_at,
                       (SELECT min(effective_from) FROM agreements WHERE partner_id = p.id)
                           AS agreement_from
                FROM partners p
                LEFT JOIN LATERAL (
                    SELECT * FROM earn_rules WHERE partner_id = p.id
                    ORDER BY recorded_at DESC, id DESC LIMIT 1
                ) r ON true
                WHERE p.id = :p
                """
            ),
            {"p": partner_id},
        )
    ).one_or_none()
    if row is None:
        raise PartnerNotFound(f"partner {partner_id} not found")
    partner = PartnerRecord(row.id, row.name, row.category, row.currency, row.hold_days)
    rule = None
    if row.base_rate is not None:
        rule = EarnRuleRecord(
            partner_id=row.id,
            base_rate=row.base_rate,
            category_rates={k: Decimal(v) for k, v in row.category_rates.items()},
            hold_days=row.rule_hold_days,
            max_redeem_share=row.max_redeem_share,
            max_points_per_transaction=row.max_points_per_transaction,
            recorded_at=row.recorded_at,
        )
    return PartnerConfig(partner, rule, row.agreement_from)


async def list_partners(conn: AsyncConnection, *, limit: int = 100) -> list[PartnerRecord]:
    """All partners, oldest first."""
    rows = await conn.execute(_PARTNER.order_by(_partners.c.id).limit(limit))
    return [PartnerRecord(*r) for r in rows]


async def get_many(conn: AsyncConnection, *, ids: list[uuid.UUID]) -> list[PartnerRecord | None]:
    """Partners by id, in the order asked (None where unknown): for DataLoaders."""
    # `= ANY(array)`: one statement text for any number of ids (IN would render one per count).
    ids_param = bindparam("ids", ids, type_=ARRAY(_partners.c.id.type))
    rows = await conn.execute(_PARTNER.where(_partners.c.id == any_(ids_param)))
    found = {r.id: PartnerRecord(*r) for r in rows}
    return [found.get(i) for i in ids]
