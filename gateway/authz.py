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


class Denied(Exception):
    """The principal may not do this."""


def allows(principal: Principal | None, scope: str, kind: str | None = None) -> bool:
    """The principal holds `scope` (and, when given, is of `kind`)."""
    return (
        principal is not None
        and scope in principal.scopes
        and (kind is None or principal.kind == kind)
    )


def is_operator(principal: Principal | None) -> bool:
    """The principal acts for the operator."""
    return principal is not None and OPERATOR in principal.scopes


def may_see_partner(principal: Principal, partner_id: uuid.UUID) -> bool:
    """A partner's terms (earn rule, agreements): the operator's, and the partner's own."""
    return OPERATOR in principal.scopes or (
        principal.kind == "partner" and principal.partner_id == partner_id
    )


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
