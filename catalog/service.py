"""The rewards catalog: partners publish rewards priced in points; members redeem them
(`catalog.redemptions`).

Rules (DOMAIN.md "Rewards"): a reward belongs to the partner that delivers it, is priced in
points, has a stock (goods, charity: a count or unlimited; a voucher: its unused codes) and an
availability window; a retired reward is off the catalog for good. Nothing here commits: the
caller's unit of work does (`loyalty.rewards`).

`owner` arguments restrict a change to one partner's rewards (None: the operator, any partner's);
another partner's reward is reported as not found, so that its existence is not told.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy import (
    update as sql_update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.errors import RewardNotFound
from catalog.models import REWARD_KINDS, Reward, RewardKind, VoucherCode
from core.clock import ensure_aware
from core.errors import ValidationError
from core.ids import uuid7
from core.tables import table
from core.text import UNSTORABLE_TEXT, storable
from partners import service as partners

_rewards = table(Reward)
_codes = table(VoucherCode)

MAX_PRICE = 1_000_000_000  # the ledger's largest movement (ledger.service.MAX_POINTS)
MAX_STOCK = 1_000_000_000
MAX_CODES_PER_CALL = 10_000
MAX_CODE_LENGTH = 100
MAX_TITLE = 200
MAX_DESCRIPTION = 4000
MAX_CATEGORY = 100


# ---------------------------------------------------------------------------------------------
# Rewards


@dataclass(frozen=True, slots=True)
class RewardDraft:
    """What a partner says about a reward (publish, or the result of an update)."""

    title: str
    description: str
    kind: str
    price_points: int
    stock: int | None
    category: str | None
    available_from: datetime | None
    available_until: datetime | None

    def checked(self) -> RewardDraft:
        """The draft normalised, or a VALIDATION error naming the field at fault."""
        title = (self.title or "").strip()
        if not title or len(title) > MAX_TITLE:
            raise ValidationError(f"title must be 1..{MAX_TITLE} characters", field="title")
        description = (self.description or "").strip()
        if len(description) > MAX_DESCRIPTION:
            raise ValidationError(
                f"description must be at most {MAX_DESCRIPTION} characters", field="description"
            )
        if self.kind not in REWARD_KINDS:
            raise ValidationError(f"kind must be one of {', '.join(REWARD_KINDS)}", field="kind")
        _whole(self.price_points, "pricePoints", low=1, high=MAX_PRICE)
        if self.stock is not None:
            if self.kind == RewardKind.VOUCHER:
                raise ValidationError(
                    "a voucher's stock is its unused codes: give voucherCodes, not stock",
                    field="stock",
                )
            _whole(self.stock, "stock", low=0, high=MAX_STOCK)
        category = self.category
        if category is not None:
            category = category.strip()
            if not category or len(category) > MAX_CATEGORY:
                raise ValidationError(
                    f"category must be 1..{MAX_CATEGORY} characters", field="category"
                )
        start = _instant(self.available_from, "availableFrom")
        end = _instant(self.available_until, "availableUntil")
        if start is not None and end is not None and end <= start:
            raise ValidationError(
                "availableUntil must be after availableFrom", field="availableUntil"
            )
        for value, what in ((title, "title"), (description, "description"), (category, "category")):
            if value is not None and not storable(value):
                raise ValidationError(f"{what} {UNSTORABLE_TEXT}", field=what)
        return RewardDraft(
            title, description, self.kind, self.price_points, self.stock, category, start, end
        )


# The fields of a draft that an update may change (the kind is fixed at publication).
CHANGEABLE = frozenset(f.name for f in dataclasses.fields(RewardDraft)) - {"kind"}


@dataclass(frozen=True, slots=True)
class RewardRecord:
    """A reward as stored, with its stock left (None: unlimited)."""

    id: uuid.UUID
    partner_id: uuid.UUID
    title: str
    description: str
    kind: str
    price_points: int
    stock: int | None
    category: str | None
    available_from: datetime | None
    available_until: datetime | None
    retired_at: datetime | None
    created_at: datetime
    updated_at: datetime
    stock_left: int | None

    def draft(self) -> RewardDraft:
        return RewardDraft(
            self.title,
            self.description,
            self.kind,
            self.price_points,
            self.stock,
            self.category,
            self.available_from,
            self.available_until,
        )

    def available_at(self, at: datetime) -> bool:
        """Offered to members at `at`: not retired, inside its window."""
        return (
            self.retired_at is None
            and (self.available_from is None or self.available_from <= at)
            and (self.available_until is None or at < self.available_until)
        )


def _whole(value: Any, what: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{what} must be a whole number in {low}..{high}", field=what)
    return value


def _instant(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        return ensure_aware(value)
    except ValueError as exc:
        raise ValidationError(f"{what}: {exc}", field=what) from None


_UNUSED_CODES = (
    select(func.count())
    .where(_codes.c.reward_id == _rewards.c.id, _codes.c.redemption_id.is_(None))
    .scalar_subquery()
)
_STOCK_LEFT = case(
    (_rewards.c.kind == RewardKind.VOUCHER, _UNUSED_CODES), else_=_rewards.c.stock
).label("stock_left")

# The columns of a RewardRecord, in its order.
_REWARD = select(
    _rewards.c.id,
    _rewards.c.partner_id,
    _rewards.c.title,
    _rewards.c.description,
    _rewards.c.kind,
    _rewards.c.price_points,
    _rewards.c.stock,
    _rewards.c.category,
    _rewards.c.available_from,
    _rewards.c.available_until,
    _rewards.c.retired_at,
    _rewards.c.created_at,
    _rewards.c.updated_at,
    _STOCK_LEFT,
)


def _record(row: Any) -> RewardRecord:
    return RewardRecord(*row)


def check_codes(codes: Sequence[str], field: str = "codes") -> list[str]:
    """Voucher codes as they will be stored: each stripped, 1..100 characters, storable, no
    two alike, at most MAX_CODES_PER_CALL of them."""
    if len(codes) > MAX_CODES_PER_CALL:
        raise ValidationError(f"at most {MAX_CODES_PER_CALL} codes per call", field=field)
    out: list[str] = []
    seen: set[str] = set()
    for i, raw in enumerate(codes):
        code = raw.strip() if isinstance(raw, str) else ""
        if not code or len(code) > MAX_CODE_LENGTH:
            raise ValidationError(
                f"{field}[{i}] must be 1..{MAX_CODE_LENGTH} characters", field=f"{field}[{i}]"
            )
        if not storable(code):
            raise ValidationError(f"{field}[{i}] {UNSTORABLE_TEXT}", field=f"{field}[{i}]")
        if code in seen:
            raise ValidationError(f"{field}[{i}] appears twice in the list", field=f"{field}[{i}]")
        seen.add(code)
        out.append(code)
    return out


async def publish(
    conn: AsyncConnection,
    *,
    partner_id: uuid.UUID,
    draft: RewardDraft,
    voucher_codes: Sequence[str] = (),
    actor: str,
) -> RewardRecord:
    """Publish a reward of `partner_id` (which must exist), with its first voucher codes."""
    draft = draft.checked()
    codes = check_codes(voucher_codes, "voucherCodes")
    if codes and draft.kind != RewardKind.VOUCHER:
        raise ValidationError("only a VOUCHER reward has voucher codes", field="voucherCodes")
    await partners.get(conn, partner_id=partner_id)
    reward_id = uuid7()
    await conn.execute(
        insert(_rewards).values(
            id=reward_id, partner_id=partner_id, actor=actor, **dataclasses.asdict(draft)
        )
    )
    if codes:
        await _insert_codes(conn, reward_id=reward_id, codes=codes)
    return await get(conn, reward_id=reward_id)


async def get(
    conn: AsyncConnection, *, reward_id: uuid.UUID, owner: uuid.UUID | None = None
) -> RewardRecord:
    """One reward (of `owner`, when given); RewardNotFound otherwise."""
    query = _REWARD.where(_rewards.c.id == reward_id)
    row = (await conn.execute(query)).one_or_none()
    if row is None or (owner is not None and row.partner_id != owner):
        raise RewardNotFound("reward not found")
    return _record(row)


async def _for_change(
    conn: AsyncConnection, *, reward_id: uuid.UUID, owner: uuid.UUID | None, lock: str
) -> RewardRecord:
    """The reward, row-locked (`lock`), if `owner` may change it and it is not retired."""
    locked = (
        await conn.execute(
            text(f"SELECT partner_id, retired_at FROM rewards WHERE id = :id {lock}"),
            {"id": reward_id},
        )
    ).one_or_none()
    if locked is None or (owner is not None and locked.partner_id != owner):
        raise RewardNotFound("reward not found")
    if locked.retired_at is not None:
        raise ValidationError("the reward is retired: it can no longer change", field="rewardId")
    return await get(conn, reward_id=reward_id)


async def update(
    conn: AsyncConnection,
    *,
    reward_id: uuid.UUID,
    owner: uuid.UUID | None,
    changes: dict[str, Any],
) -> RewardRecord:
    """Change some of a live reward's fields (not its kind); the result is checked whole."""
    unknown = set(changes) - CHANGEABLE
    if unknown:
        raise ValidationError(f"cannot change {', '.join(sorted(unknown))}")
    current = await _for_change(conn, reward_id=reward_id, owner=owner, lock="FOR NO KEY UPDATE")
    draft = dataclasses.replace(current.draft(), **changes).checked()
    if not changes:
        return current
    values = {k: getattr(draft, k) for k in changes}
    await conn.execute(
        sql_update(_rewards)
        .where(_rewards.c.id == reward_id)
        .values(**values, updated_at=func.now())
    )
    return await get(conn, reward_id=reward_id)


async def retire(
    conn: AsyncConnection, *, reward_id: uuid.UUID, owner: uuid.UUID | None, at: datetime
) -> RewardRecord:
    """Withdraw a reward from the catalog for good (retiring it again changes nothing)."""
    row = (
        await conn.execute(
            sql_update(_rewards)
            .where(_rewards.c.id == reward_id)
            .where(literal(True) if owner is None else _rewards.c.partner_id == owner)
            .values(
                retired_at=func.coalesce(_rewards.c.retired_at, at),
                updated_at=case(
                    (_rewards.c.retired_at.is_(None), func.now()), else_=_rewards.c.updated_at
                ),
            )
            .returning(_rewards.c.id)
        )
    ).one_or_none()
    if row is None:
        raise RewardNotFound("reward not found")
    return await get(conn, reward_id=reward_id)


async def add_codes(
    conn: AsyncConnection, *, reward_id: uuid.UUID, owner: uuid.UUID | None, codes: Sequence[str]
) -> tuple[RewardRecord, int]:
    """Add codes to a live voucher's pool; a code already in the pool refuses the whole list
    (the caller's unit of work rolls back what went in before the refusal)."""
    checked = check_codes(codes)
    if not checked:
        raise ValidationError("codes must not be empty", field="codes")
    # FOR SHARE: the reward stays live while its codes go in; redeemers share the lock.
    current = await _for_change(conn, reward_id=reward_id, owner=owner, lock="FOR SHARE")
    if current.kind != RewardKind.VOUCHER:
        raise ValidationError("only a VOUCHER reward has voucher codes", field="rewardId")
    added = await _insert_codes(conn, reward_id=reward_id, codes=checked)
    if added != len(checked):
        raise ValidationError(
            f"{len(checked) - added} of these codes are already in the reward's pool",
            field="codes",
        )
    return await get(conn, reward_id=reward_id), added


async def _insert_codes(conn: AsyncConnection, *, reward_id: uuid.UUID, codes: list[str]) -> int:
    # One statement for the whole list (unnest of one array parameter); codes already in the
    # pool are skipped and counted by the caller.
    result = await conn.execute(
        text(
            "INSERT INTO voucher_codes (reward_id, code) "
            "SELECT :reward, c FROM unnest(CAST(:codes AS text[])) WITH ORDINALITY AS u(c, n) "
            "ORDER BY n "
            "ON CONFLICT (reward_id, code) DO NOTHING"
        ),
        {"reward": reward_id, "codes": codes},
    )
    return int(result.rowcount)


def _live(at: datetime) -> ColumnElement[bool]:
    return and_(
        _rewards.c.retired_at.is_(None),
        or_(_rewards.c.available_from.is_(None), _rewards.c.available_from <= at),
        or_(_rewards.c.available_until.is_(None), _rewards.c.available_until > at),
    )


async def browse(
    conn: AsyncConnection,
    *,
    at: datetime,
    limit: int,
    before: uuid.UUID | None = None,
    partner_id: uuid.UUID | None = None,
    category: str | None = None,
    max_points: int | None = None,
    include_unavailable: bool = False,
) -> list[RewardRecord]:
    """Rewards newest first: those offered at `at` (not retired, inside their window), or every
    one when `include_unavailable`; filtered by partner, category and price."""
    query = _REWARD.order_by(_rewards.c.id.desc()).limit(limit)
    if not include_unavailable:
        query = query.where(_live(at))
    if before is not None:
        query = query.where(_rewards.c.id < before)
    if partner_id is not None:
        query = query.where(_rewards.c.partner_id == partner_id)
    if category is not None:
        query = query.where(_rewards.c.category == category)
    if max_points is not None:
        query = query.where(_rewards.c.price_points <= max_points)
    return [_record(r) for r in await conn.execute(query)]


async def get_many(conn: AsyncConnection, *, ids: Sequence[uuid.UUID]) -> list[RewardRecord | None]:
    """Rewards by id, in the order asked (None where unknown): for DataLoaders."""
    rows = await conn.execute(_REWARD.where(_rewards.c.id.in_(list(ids))))
    found = {r.id: _record(r) for r in rows}
    return [found.get(i) for i in ids]


def require_offered(reward: RewardRecord, at: datetime) -> None:
    """Refuse a reward not offered at `at` (retired, or outside its window) as not found."""
    if not reward.available_at(at):
        raise RewardNotFound("reward not found")
