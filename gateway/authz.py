"""Who may do what: the one authorization policy of the API, used by the GraphQL resolvers
(`gateway.graphql.access`) and the settlement HTTP routes alike.

A principal (an access token's caller) holds scopes and is of one kind: operator, partner or
member. Each function answers one question; the caller words the refusal for its protocol.
"""

from __future__ import annotations

import uuid

from gateway.oauth.auth import Principal

OPERATOR = "operator"
SETTLEMENT_READ = "settlement:read"
CATALOG_WRITE = "catalog:write"
# Who may publish and change rewards: the operator (any partner's), a partner with catalog:write
# (its own).
CATALOG_EDITORS = (OPERATOR, CATALOG_WRITE)


class Denied(Exception):
    """The principal may not do this."""


def allows(
    principal: Principal | None, scope: str | tuple[str, ...], kind: str | None = None
) -> bool:
    """The principal holds `scope` (one of them, for a tuple) and, when given, is of `kind`."""
    if principal is None or (kind is not None and principal.kind != kind):
        return False
    if isinstance(scope, str):
        return scope in principal.scopes
    return any(s in principal.scopes for s in scope)


def is_operator(principal: Principal | None) -> bool:
    """The principal acts for the operator."""
    return principal is not None and OPERATOR in principal.scopes


def may_see_partner(principal: Principal, partner_id: uuid.UUID) -> bool:
    """A partner's terms (earn rule, agreements): the operator's, and the partner's own."""
    return OPERATOR in principal.scopes or (
        principal.kind == "partner" and principal.partner_id == partner_id
    )


def may_see_earn_rule(principal: Principal, partner_id: uuid.UUID) -> bool:
    """A partner's earn rule: whoever sees its terms, and members (the app shows what each
    partner earns; rates are what the partner advertises to its customers anyway)."""
    return principal.kind == "member" or may_see_partner(principal, partner_id)


def settlement_partner(principal: Principal) -> uuid.UUID | None:
    """Whose settlement data the principal sees: None for the operator (every partner's), the
    partner's own id for a partner client with settlement:read; Denied for anyone else."""
    if OPERATOR in principal.scopes:
        return None
    if (
        principal.kind == "partner"
        and SETTLEMENT_READ in principal.scopes
        and principal.partner_id is not None
    ):
        return principal.partner_id
    raise Denied("settlement data needs an operator token or the settlement:read scope")


def may_see_settlement(principal: Principal, partner_id: uuid.UUID) -> bool:
    """A partner's statement and reconciliations: the operator's, and the partner's own."""
    try:
        viewer = settlement_partner(principal)
    except Denied:
        return False
    return viewer is None or viewer == partner_id


def catalog_owner(principal: Principal) -> uuid.UUID | None:
    """Whose rewards the principal may publish and change: None for the operator (any
    partner's), the partner's own id for a partner client with catalog:write; Denied otherwise."""
    if OPERATOR in principal.scopes:
        return None
    if (
        principal.kind == "partner"
        and CATALOG_WRITE in principal.scopes
        and principal.partner_id is not None
    ):
        return principal.partner_id
    raise Denied("the catalog needs an operator token or the catalog:write scope")


def catalog_partner(principal: Principal, requested: uuid.UUID | None) -> uuid.UUID | None:
    """The partner a catalog change is for: the operator's `requested` one (None when it named
    none), a partner's own; a partner naming another partner is Denied."""
    owner = catalog_owner(principal)
    if owner is None:
        return requested
    if requested is not None and requested != owner:
        raise Denied("a partner may only name itself as partnerId")
    return owner
