"""What the ledger's operations return; also what idempotent replays return (stored as JSON,
rebuilt unchanged).
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from core.frozen import fast_init
from ledger.models import HoldStatus


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # uuid, datetime (isoformat with a space), Decimal


@fast_init
@dataclass(frozen=True, slots=True)
class BreakdownLine:
    """A line of an earn's breakdown as the ledger stores it (`catalog.breakdown` computes
    them): `source` BASE, TIER or OFFER, `funded_by` PARTNER or OPERATOR."""

    source: str
    points: int
    offer_id: uuid.UUID | None = None
    funded_by: str = "PARTNER"


@dataclass(frozen=True)
class _Result:
    replayed: bool = field(default=False, kw_only=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The stored form: JSON-ready values (uuids and datetimes as strings)."""
        return {name: _jsonable(value) for name, value in self.stored_values().items()}

    def stored_values(self) -> dict[str, Any]:
        """The stored fields with their own values (for an encoder that writes uuids and
        datetimes itself, as orjson in ledger.batch)."""
        # The fields are flat values: read them directly (asdict deep-copies each one, and this
        # runs on every earn).
        return {name: getattr(self, name) for name in self._stored_fields()}

    @classmethod
    @functools.cache
    def _stored_fields(cls) -> tuple[str, ...]:
        return tuple(
            f.name for f in fields(cls) if f.name != "replayed" and f.metadata.get("stored", True)
        )

    @classmethod
    def from_json(cls, data: dict[str, Any], *, replayed: bool):
        kwargs = dict(data)
        for name, f in cls.__dataclass_fields__.items():
            if name in kwargs and kwargs[name] is not None:
                if f.type in ("uuid.UUID", "uuid.UUID | None"):
                    kwargs[name] = uuid.UUID(kwargs[name])
                elif f.type in ("datetime", "datetime | None"):
                    kwargs[name] = datetime.fromisoformat(kwargs[name])
        return cls(**kwargs, replayed=replayed)


@fast_init
@dataclass(frozen=True)
class EarnResult(_Result):
    transaction_id: uuid.UUID
    points: int
    status: Literal["pending", "available"]
    available_at: datetime
    expires_at: datetime
    debt_repaid: int = 0
    # The breakdown as computed for this earn (empty: not known here, e.g. a replay; read it
    # with `ledger.reads.earn_lines`). Not in the stored result: the lines are rows of their own.
    lines: tuple[BreakdownLine, ...] = field(default=(), metadata={"stored": False}, kw_only=True)
    # What the request's follow-up gave (`ledger.earn.FollowUp`: the member's new tier), on the
    # earn that ran it; None on a replay.
    follow_up: str | None = field(default=None, metadata={"stored": False}, kw_only=True)


@dataclass(frozen=True)
class HoldResult(_Result):
    hold_id: uuid.UUID
    points: int
    expires_at: datetime
    status: str = HoldStatus.ACTIVE


@dataclass(frozen=True)
class CaptureResult(_Result):
    transaction_id: uuid.UUID
    hold_id: uuid.UUID
    points: int
    released: int


@dataclass(frozen=True)
class VoidResult(_Result):
    hold_id: uuid.UUID
    released: int


@dataclass(frozen=True)
class ReversalResult(_Result):
    transaction_id: uuid.UUID
    points: int
    from_wallet: int
    to_debt: int


@dataclass(frozen=True)
class ReturnResult(_Result):
    transaction_id: uuid.UUID
    hold_id: uuid.UUID
    points: int


@dataclass(frozen=True)
class BonusResult(_Result):
    transaction_id: uuid.UUID
    member_id: uuid.UUID
    points: int
    issuer_id: uuid.UUID | None  # None: the operator issued them
    expires_at: datetime | None = None
    debt_repaid: int = 0  # of `points`, what repaid the member's debt (not in the wallet)


@dataclass(frozen=True)
class RewardSpendResult(_Result):
    transaction_id: uuid.UUID
    member_id: uuid.UUID
    partner_id: uuid.UUID
    points: int


@dataclass(frozen=True)
class TransferResult(_Result):
    transaction_id: uuid.UUID
    from_member_id: uuid.UUID
    to_member_id: uuid.UUID
    points: int
    debt_repaid: int = 0  # of `points`, what repaid the receiver's debt (not in the wallet)


@dataclass(frozen=True)
class Balance:
    """A member's points at an instant."""

    wallet: int  # stored balance: remaining lots (incl. not yet swept expired) + active holds
    available: int  # spendable now
    pending: int  # earned, still in the partner's return window
    on_hold: int  # reserved by live authorizations
    expiring: int  # available or pending, expiring within the horizon
    debt: int  # points owed (>= 0), repaid by later earnings

    @property
    def total(self) -> int:
        """The member's points now: available + pending + on hold."""
        # Not `wallet`: that still holds lots that expired since the last expiry run, which
        # are gone (DOMAIN.md) and which the points liability does not count.
        return self.available + self.pending + self.on_hold


@dataclass(frozen=True)
class ExpiryReport:
    members: int
    lots: int
    points: int
    batches: int
