"""A partner's terms, set by the operator: the partner itself, its agreements (prices per
point), its earn rule and its OAuth clients. The earn and redeem paths read the terms from a
cache (`loyalty.caches.partner_config`): a change made here is seen at once in this process."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from core.errors import ErrorCode
from core.errors import ValidationError as DomainValidation
from loyalty.runtime import Runtime
from partners import clients
from partners import service as partners
from partners.errors import ClientNotFound
from partners.service import AgreementRecord, EarnRuleRecord, PartnerRecord

# What each use case may raise (gateway.graphql checks each mutation's result union against it).
CREATE_PARTNER_ERRORS = frozenset({ErrorCode.VALIDATION})
SET_AGREEMENT_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.PARTNER_NOT_FOUND})
SET_EARN_RULE_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.PARTNER_NOT_FOUND})
CREATE_CLIENT_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.PARTNER_NOT_FOUND})
CHANGE_CLIENT_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.NOT_FOUND})


class CategoryRate(Protocol):
    """A category and its own earn rate (decimal string)."""

    category: str
    rate: str


def parse_id(value: str, what: str) -> uuid.UUID:
    """`value` as an id; a VALIDATION error on `what` otherwise."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise DomainValidation(f"{what} is not a valid id", field=what) from None


async def create_partner(rt: Runtime, *, name: str, category: str, currency: str) -> PartnerRecord:
    """Register a partner merchant."""
    async with rt.engine.begin() as conn:
        return await partners.create(conn, name=name, category=category, currency=currency)


async def set_agreement(
    rt: Runtime,
    *,
    actor: str,
    partner_id: str,
    issue_price: str,
    redemption_price: str,
    effective_from: datetime,
) -> AgreementRecord:
    """Record a partner's prices per point (in the settlement currency) from an instant on."""
    pid = parse_id(partner_id, "partnerId")
    async with rt.engine.begin() as conn:
        a = await partners.set_agreement(
            conn,
            partner_id=pid,
            issue_price=issue_price,
            redemption_price=redemption_price,
            effective_from=effective_from,
            currency=rt.settings.settlement_currency,
            actor=actor,
        )
    rt.caches.partner_config.invalidate(pid)  # the earn path reads agreements from it
    return a


async def set_earn_rule(
    rt: Runtime,
    *,
    actor: str,
    partner_id: str,
    base_rate: str,
    category_rates: Sequence[CategoryRate],
    hold_days: int,
    max_redeem_share: str,
    max_points_per_transaction: int | None,
) -> EarnRuleRecord:
    """Put a partner's earn rule in force (it replaces the one in force)."""
    pid = parse_id(partner_id, "partnerId")
    rates: dict[str, Any] = {}
    for cr in category_rates:
        if cr.category in rates:
            raise DomainValidation(f"category {cr.category!r} appears twice", field="categoryRates")
        rates[cr.category] = cr.rate
    async with rt.engine.begin() as conn:
        rule = await partners.set_earn_rule(
            conn,
            partner_id=pid,
            base_rate=base_rate,
            category_rates=rates,
            hold_days=hold_days,
            max_redeem_share=max_redeem_share,
            max_points_per_transaction=max_points_per_transaction,
            actor=actor,
        )
    rt.caches.partner_config.invalidate(pid)
    return rule


async def create_partner_client(
    rt: Runtime, *, partner_id: str, scopes: Sequence[str]
) -> clients.ClientCredentials:
    """An OAuth client acting for the partner; its secret is in the result, and only there."""
    pid = parse_id(partner_id, "partnerId")
    async with rt.engine.begin() as conn:
        await partners.get(conn, partner_id=pid)
        return await clients.create_partner_client(conn, partner_id=pid, scopes=list(scopes))


async def partner_clients(rt: Runtime, *, partner_id: str) -> list[clients.ClientRecord]:
    """The partner's OAuth clients, oldest first (no secrets: only their hashes are kept)."""
    pid = parse_id(partner_id, "partnerId")
    async with rt.engine.connect() as conn:
        return await clients.list_for_partner(conn, partner_id=pid)


async def _partner_client(conn: Any, client_id: str) -> clients.ClientRecord:
    record = await clients.get(conn, client_id=client_id)
    if record is None or record.kind != "partner":
        raise ClientNotFound(f"no partner client {client_id!r}")
    return record


async def disable_partner_client(rt: Runtime, *, client_id: str) -> clients.ClientRecord:
    """Stop accepting a partner client's credentials (its tokens live out their minutes)."""
    async with rt.engine.begin() as conn:
        await _partner_client(conn, client_id)
        await clients.disable(conn, client_id=client_id)
        return await _partner_client(conn, client_id)


async def rotate_partner_client_secret(
    rt: Runtime, *, client_id: str, grace_hours: int
) -> clients.ClientCredentials:
    """A new secret for a partner client, in the result only; the old one keeps working for
    `grace_hours` (0: stops at once)."""
    async with rt.engine.begin() as conn:
        record = await _partner_client(conn, client_id)
        if record.disabled_at is not None:
            raise DomainValidation("a disabled client's secret cannot be rotated", field="clientId")
        return await clients.rotate_secret(
            conn, client_id=client_id, grace=timedelta(hours=grace_hours)
        )
