"""GraphQL object and input types of the partner contract (API.md). Every field is described:
these descriptions are what partners' engineers read."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Generic, TypeVar

import strawberry

from core.money import Money as DomainMoney
from ledger.reads import HoldRecord
from ledger.results import BreakdownLine, EarnResult
from loyalty.redeem import Held
from members.codes import IssuedCode
from partners.refunds import RefundResult
from partners.service import AgreementRecord, EarnRuleRecord, PartnerRecord

N = TypeVar("N")
InputT = TypeVar("InputT")


# ---------------------------------------------------------------------------------------------
# Money


@strawberry.type(
    description="An exact amount of money: a decimal string and its ISO 4217 currency."
)
class Money:
    amount: str = strawberry.field(description='Decimal string, e.g. "1234.50". Never a float.')
    currency: str = strawberry.field(description="ISO 4217 code, e.g. RUB.")

    @classmethod
    def of(cls, amount: Decimal, currency: str) -> Money:
        return cls(amount=str(amount), currency=currency)


def plain_input(cls: type[InputT]) -> type[InputT]:
    """Build `cls` straight from the coerced input value, through Strawberry's `from_input` hook.

    For inputs made only of plain scalars (str, int, float, bool, optional or not) and nested
    `plain_input` types: graphql-core has already coerced and checked every value, so what is
    left is putting them in the dataclass. Strawberry's generic conversion walks each field's
    type annotations on every request; on the earn path it was the largest single cost of the
    mutation's own work (bench/RESULTS.md). Anything else (lists, enums, custom scalars, Maybe)
    is refused when the first value is built.
    """
    from strawberry.schema.name_converter import NameConverter
    from strawberry.types.base import StrawberryOptional

    definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
    spec: list[tuple[str, str, Any]] = []  # (GraphQL name, Python name, nested input type)

    def fields() -> list[tuple[str, str, Any]]:
        if not spec:  # annotations resolve once the module is complete: build on first use
            names = NameConverter()
            for f in definition.fields:
                t = f.type
                inner = t.of_type if isinstance(t, StrawberryOptional) else t
                nested = getattr(inner, "__strawberry_definition__", None)
                if nested is not None and nested.is_input and nested.from_input is not None:
                    spec.append((names.from_field(f), f.python_name, inner))
                elif inner in (str, int, float, bool):
                    spec.append((names.from_field(f), f.python_name, None))
                else:
                    raise TypeError(f"{cls.__name__}.{f.python_name} is not a plain input field")
        return spec

    def from_input(type_: type, value: Any, context: Any) -> Any:
        kwargs = {}
        for graphql_name, python_name, nested in fields():
            if graphql_name in value:
                v = value[graphql_name]
                if nested is not None and v is not None:
                    v = nested.__strawberry_definition__.from_input(nested, v, context)
                kwargs[python_name] = v
        return type_(**kwargs)

    definition.from_input = from_input
    return cls


@plain_input
@strawberry.input(
    description="An amount of money: a decimal string with at most the currency's minor-unit digits."
)
class MoneyInput:
    amount: str = strawberry.field(
        description='Decimal string, e.g. "1234.50"; at most 12 integer digits.'
    )
    currency: str = strawberry.field(description="ISO 4217 code; must be the partner's currency.")

    def parse(self, *, positive: bool = True) -> DomainMoney:
        return DomainMoney.parse(self.amount, self.currency, positive=positive)


# ---------------------------------------------------------------------------------------------
# Relay connections with keyset cursors


MAX_CURSOR = 2**63 - 1  # keys are bigint (or microseconds since 1970): never past int64
MAX_ID_CURSOR = 2**128 - 1  # keys that are UUIDs (time-ordered v7), as integers
_CURSOR_VALUE = re.compile(r"(0|[1-9][0-9]{0,38})")


def encode_cursor(value: int) -> str:
    return base64.urlsafe_b64encode(f"k:{value}".encode()).decode()


def decode_cursor(cursor: str | None, *, maximum: int = MAX_CURSOR) -> int | None:
    """The key in a cursor made by `encode_cursor`: a whole number in 0..`maximum`; anything
    else (not base64, not ASCII, another prefix, negative, too large) is a malformed cursor."""
    if cursor is None:
        return None
    try:
        if len(cursor) > 64:
            raise ValueError
        raw = base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True)
        kind, _, value = raw.decode("ascii").partition(":")
        if kind != "k" or not _CURSOR_VALUE.fullmatch(value) or int(value) > maximum:
            raise ValueError
        return int(value)
    except ValueError:  # binascii.Error and the Unicode errors are ValueErrors
        from core.errors import ValidationError

        raise ValidationError("malformed cursor", field="after") from None


def decode_id_cursor(cursor: str | None) -> uuid.UUID | None:
    """The UUID key in a cursor made by `encode_cursor(key.int)`."""
    value = decode_cursor(cursor, maximum=MAX_ID_CURSOR)
    return None if value is None else uuid.UUID(int=value)


def page(rows: list[Any], *, first: int, after: int | None, key: Any, node: Any) -> Connection[Any]:
    """A Relay page from `first + 1` rows fetched after the keyset cursor `after`."""
    edges = [Edge(cursor=encode_cursor(key(r)), node=node(r)) for r in rows[:first]]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > first,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )


@strawberry.type(description="Relay page information.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="More items follow this page.")
    has_previous_page: bool = strawberry.field(description="Items precede this page.")
    start_cursor: str | None = strawberry.field(description="Cursor of the first item of the page.")
    end_cursor: str | None = strawberry.field(
        description="Cursor of the last item: pass as `after`."
    )


@strawberry.type(description="An item of a page and its cursor.")
class Edge(Generic[N]):
    cursor: str = strawberry.field(description="Opaque cursor of this item.")
    node: N = strawberry.field(description="The item.")


@strawberry.type(description="A page of items (Relay connection).")
class Connection(Generic[N]):
    edges: list[Edge[N]] = strawberry.field(
        description="The items of this page with their cursors."
    )
    page_info: PageInfo = strawberry.field(description="Where this page is.")


# ---------------------------------------------------------------------------------------------
# Partners


@strawberry.type(description="A category's own earn rate (replaces the base rate).")
class CategoryRate:
    category: str = strawberry.field(
        description="Free-form category, as the partner sends it with earn."
    )
    rate: str = strawberry.field(description="Points per currency unit, decimal string.")


@strawberry.type(
    description="How a partner's customers earn points, and how much of a bill points may pay."
)
class EarnRule:
    base_rate: str = strawberry.field(
        description="Points per currency unit for categories without their own rate."
    )
    category_rates: list[CategoryRate] = strawberry.field(description="Per-category rates.")
    hold_days: int = strawberry.field(
        description="Return window: earned points are pending this many days."
    )
    max_redeem_share: str = strawberry.field(
        description="Largest fraction of a bill payable in points, in (0, 1]."
    )
    max_points_per_transaction: int | None = strawberry.field(
        description="Cap on points per earn, if any."
    )
    recorded_at: datetime = strawberry.field(description="When this rule was put in force.")

    @classmethod
    def of(cls, r: EarnRuleRecord) -> EarnRule:
        return cls(
            base_rate=str(r.base_rate),
            category_rates=[
                CategoryRate(category=k, rate=str(v)) for k, v in sorted(r.category_rates.items())
            ],
            hold_days=r.hold_days,
            max_redeem_share=str(r.max_redeem_share),
            max_points_per_transaction=r.max_points_per_transaction,
            recorded_at=r.recorded_at,
        )


@strawberry.type(
    description="Prices per point between a partner and the coalition, from an instant on."
)
class Agreement:
    id: strawberry.ID = strawberry.field(description="Agreement id.")
    partner_id: strawberry.ID = strawberry.field(description="The partner.")
    issue_price: Money = strawberry.field(description="What the partner pays per point it issues.")
    redemption_price: Money = strawberry.field(
        description="What the coalition pays per point the partner accepts."
    )
    effective_from: datetime = strawberry.field(
        description="Events from this instant on use these prices."
    )
    recorded_at: datetime = strawberry.field(description="When the agreement was entered.")

    @classmethod
    def of(cls, a: AgreementRecord) -> Agreement:
        return cls(
            id=strawberry.ID(str(a.id)),
            partner_id=strawberry.ID(str(a.partner_id)),
            issue_price=Money.of(a.issue_price, a.currency),
            redemption_price=Money.of(a.redemption_price, a.currency),
            effective_from=a.effective_from,
            recorded_at=a.recorded_at,
        )


@strawberry.federation.type(keys=["id"], description="A partner merchant of the coalition.")
class Partner:
    id: strawberry.ID = strawberry.field(description="Partner id.")
    name: str = strawberry.field(description="Display name.")
    category: str = strawberry.field(description="Business category, e.g. fuel, grocery.")
    currency: str = strawberry.field(description="The currency of its purchases (ISO 4217).")
    hold_days: int = strawberry.field(description="Return window of its earn rule in force.")

    @classmethod
    def of(cls, p: PartnerRecord) -> Partner:
        return cls(
            id=strawberry.ID(str(p.id)),
            name=p.name,
            category=p.category,
            currency=p.currency,
            hold_days=p.hold_days,
        )

    @classmethod
    async def resolve_reference(cls, info: strawberry.Info, id: strawberry.ID) -> Partner | None:
        """Federation (`_entities`): a partner as the `partners` query shows it to the caller."""
        from gateway.graphql.federation import visible_partner

        record = await visible_partner(info.context, id)
        return None if record is None else cls.of(record)


@strawberry.type(description="An OAuth client of a partner. The secret is shown once, at creation.")
class PartnerClient:
    client_id: str = strawberry.field(description="OAuth client_id (URL-safe).")
    client_secret: str | None = strawberry.field(
        description="OAuth client_secret; only in the creation result."
    )
    scopes: list[str] = strawberry.field(description="Scopes the client may request.")
    partner_id: strawberry.ID | None = strawberry.field(description="The partner it acts for.")


# ---------------------------------------------------------------------------------------------
# Points


@strawberry.enum(
    description="Where an earn line's points come from (DOMAIN.md 'Offers and the earn breakdown')."
)
class EarnLineSource(Enum):
    BASE = strawberry.enum_value("BASE", description="Amount x the rule's rate, capped.")
    TIER = strawberry.enum_value("TIER", description="The member's tier multiplier's extra.")
    OFFER = strawberry.enum_value("OFFER", description="An applying offer's extra.")


@strawberry.enum(description="Who issues, and pays for, a line's points.")
class PointsFunder(Enum):
    PARTNER = strawberry.enum_value("PARTNER", description="The earning partner.")
    OPERATOR = strawberry.enum_value("OPERATOR", description="The operator (no partner pays).")


@strawberry.type(description="The offer an earn line comes from (the `offers` query has the rest).")
class OfferRef:
    id: strawberry.ID = strawberry.field(description="Offer id.")


@strawberry.type(description="A line of an earn's breakdown; an earn's lines sum to its points.")
class EarnLine:
    source: EarnLineSource = strawberry.field(description="BASE, TIER or OFFER.")
    points: int = strawberry.field(description="Whole points, rounded down on their own.")
    funded_by: PointsFunder = strawberry.field(description="Who issues these points.")
    offer: OfferRef | None = strawberry.field(description="The offer of an OFFER line.")

    @classmethod
    def of(cls, line: BreakdownLine) -> EarnLine:
        return cls(
            source=EarnLineSource(line.source),
            points=line.points,
            funded_by=PointsFunder(line.funded_by),
            offer=None if line.offer_id is None else OfferRef(id=strawberry.ID(str(line.offer_id))),
        )


async def earn_breakdown(
    info: strawberry.Info, transaction_id: str, points: int, known: tuple[BreakdownLine, ...]
) -> list[EarnLine]:
    """An earn's lines: as computed (a fresh earn), else as stored (a replay, the activity);
    none stored: one BASE line of its points."""
    lines = known or await info.context.earn_lines_loader.load(uuid.UUID(transaction_id))
    return [EarnLine.of(line) for line in lines or (BreakdownLine("BASE", points),)]


@strawberry.type(description="The ledger transaction of an earn.")
class EarnTransaction:
    id: strawberry.ID = strawberry.field(description="Transaction id.")
    points: int = strawberry.field(description="Points credited.")
    status: str = strawberry.field(
        description='"pending" (inside the return window) or "available".'
    )
    available_at: datetime = strawberry.field(description="When the points become spendable.")
    expires_at: datetime = strawberry.field(description="When the points expire if unspent.")
    lines: strawberry.Private[tuple[BreakdownLine, ...]] = ()

    @strawberry.field(description="The earn's lines (BASE, TIER, OFFER), summing to `points`.")
    async def breakdown(self, info: strawberry.Info) -> list[EarnLine]:
        return await earn_breakdown(info, self.id, self.points, self.lines)

    @classmethod
    def of(cls, r: EarnResult) -> EarnTransaction:
        return cls(
            id=strawberry.ID(str(r.transaction_id)),
            points=r.points,
            status=r.status,
            available_at=r.available_at,
            expires_at=r.expires_at,
            lines=r.lines,
        )


@strawberry.type(
    description="An authorization: points reserved for a partner until captured, voided or expired."
)
class Hold:
    id: strawberry.ID = strawberry.field(
        description="Hold id: pass to captureRedemption / voidRedemption."
    )
    points: int = strawberry.field(description="Points reserved.")
    expires_at: datetime = strawberry.field(
        description="The hold lapses by itself at this instant."
    )
    status: str = strawberry.field(description="active, captured, voided or expired.")

    @classmethod
    def of(cls, hold_id: uuid.UUID | str, h: Held | HoldRecord) -> Hold:
        """A hold as its authorization answered it (`Held`) or as stored (`HoldRecord`)."""
        return cls(
            id=strawberry.ID(str(hold_id)),
            points=h.points,
            expires_at=h.expires_at,
            status=h.status,
        )


@strawberry.type(description="A posted movement of points.")
class PointsTransaction:
    id: strawberry.ID = strawberry.field(description="Transaction id.")
    points: int = strawberry.field(description="Points moved.")
    kind: str = strawberry.field(
        description="earn, reversal, capture, return, expiry or adjustment."
    )


@strawberry.type(description="A (partial) refund of a partner's order.")
class Refund:
    id: strawberry.ID = strawberry.field(description="Refund id.")
    order_ref: str = strawberry.field(description="The partner's order reference.")
    amount: Money = strawberry.field(description="Amount refunded by this call.")
    points_reversed: int = strawberry.field(description="Earned points taken back by this refund.")
    points_returned: int = strawberry.field(
        description="Points paid with that went back to the member."
    )

    @classmethod
    def of(cls, r: RefundResult) -> Refund:
        return cls(
            id=strawberry.ID(str(r.id)),
            order_ref=r.order_ref,
            amount=Money.of(r.amount.amount, r.amount.currency),
            points_reversed=r.points_reversed,
            points_returned=r.points_returned,
        )


@strawberry.type(description="A member's points at this instant.")
class Balance:
    available: int = strawberry.field(description="Spendable now.")
    pending: int = strawberry.field(description="Earned, still inside a partner's return window.")
    on_hold: int = strawberry.field(description="Reserved by live authorizations.")
    total: int = strawberry.field(
        description="All points in the wallet (available + pending + on hold)."
    )
    debt: int = strawberry.field(
        description="Points owed after refunds of spent points; repaid by later earnings."
    )


@strawberry.type(description="One movement on the member's account.")
class Activity:
    id: strawberry.ID = strawberry.field(description="Entry id.")
    transaction_id: strawberry.ID = strawberry.field(description="The ledger transaction.")
    kind: str = strawberry.field(
        description="earn, bonus, reversal, capture, reward, return, expiry, transfer_in "
        "(points received from another member) or transfer_out (points given to one)."
    )
    points: int = strawberry.field(description="Signed: positive credits, negative debits.")
    order_ref: str | None = strawberry.field(
        description="The partner's order reference (a reward's: its reference), if any."
    )
    at: datetime = strawberry.field(description="Effective time.")
    reason: str | None = strawberry.field(
        default=None,
        description='Why a bonus was given: "signup", "referral" or the partner\'s reason.',
    )
    counterparty_card: str | None = strawberry.field(
        default=None,
        description="A transfer's other member, by the last four digits of their card "
        "(e.g. ************0005).",
    )
    partner_id: strawberry.Private[uuid.UUID | None] = None

    @strawberry.field(
        description="An earn's lines (BASE, TIER, OFFER), summing to its points; null for "
        "every other kind."
    )
    async def breakdown(self, info: strawberry.Info) -> list[EarnLine] | None:
        if self.kind != "earn":
            return None
        return await earn_breakdown(info, self.transaction_id, self.points, ())

    @strawberry.field(
        description="The partner involved, if any (a bonus's: the partner that gave it)."
    )
    async def partner(self, info: strawberry.Info) -> Partner | None:
        if self.partner_id is None:
            return None
        record = await info.context.partner_loader.load(self.partner_id)
        return Partner.of(record) if record else None


@strawberry.type(description="A single-use code by which a member lets a partner take points.")
class RedemptionCode:
    code: str = strawberry.field(description="12 digits; show at the till or as a QR code.")
    expires_at: datetime = strawberry.field(description="Unusable after this instant.")
    max_points: int | None = strawberry.field(
        description="Most points this code lets a partner take."
    )
    partner_id: strawberry.ID | None = strawberry.field(
        description="The only partner that may use it, if bound."
    )

    @classmethod
    def of(cls, c: IssuedCode, partner_id: uuid.UUID | None) -> RedemptionCode:
        return cls(
            code=c.code,
            expires_at=c.expires_at,
            max_points=c.max_points,
            partner_id=strawberry.ID(str(partner_id)) if partner_id else None,
        )


@strawberry.type(description="A member as a partner may see it after registration.")
class MemberCard:
    id: strawberry.ID = strawberry.field(description="Member id.")
    card_number: str = strawberry.field(description="16-digit card number with a Luhn check digit.")
