"""The one authorization policy (gateway.authz), as GraphQL and the settlement routes ask it."""

from __future__ import annotations

import uuid

import pytest

from gateway import authz
from gateway.oauth.auth import Principal

PARTNER, OTHER = uuid.uuid4(), uuid.uuid4()


def principal(kind: str, *scopes: str, partner_id: uuid.UUID | None = None) -> Principal:
    return Principal(
        kind=kind,  # type: ignore[arg-type]
        client_id=f"{kind}-client",
        scopes=frozenset(scopes),
        partner_id=partner_id,
        member_id=uuid.uuid4() if kind == "member" else None,
        token_id="jti",
    )


OPERATOR = principal("operator", "operator")
READER = principal("partner", "points:earn", "settlement:read", partner_id=PARTNER)
EARNER = principal("partner", "points:earn", partner_id=PARTNER)
MEMBER = principal("member", "member")


def test_allows_checks_scope_and_kind():
    assert authz.allows(EARNER, "points:earn", "partner")
    assert not authz.allows(EARNER, "points:earn", "member")
    assert not authz.allows(EARNER, "points:redeem")
    assert not authz.allows(None, "member")


def test_a_partners_terms_are_the_operators_and_its_own():
    assert authz.may_see_partner(OPERATOR, PARTNER)
    assert authz.may_see_partner(EARNER, PARTNER)
    assert not authz.may_see_partner(EARNER, OTHER)
    assert not authz.may_see_partner(MEMBER, PARTNER)


def test_settlement_needs_the_operator_or_settlement_read():
    assert authz.settlement_partner(OPERATOR) is None
    assert authz.settlement_partner(READER) == PARTNER
    for p in (EARNER, MEMBER):
        with pytest.raises(authz.Denied):
            authz.settlement_partner(p)
    assert authz.may_see_settlement(OPERATOR, OTHER)
    assert authz.may_see_settlement(READER, PARTNER)
    assert not authz.may_see_settlement(READER, OTHER)
    assert not authz.may_see_settlement(EARNER, PARTNER)


def test_allows_one_of_several_scopes():
    writer = principal("partner", "catalog:write", partner_id=PARTNER)
    assert authz.allows(OPERATOR, authz.CATALOG_EDITORS)
    assert authz.allows(writer, authz.CATALOG_EDITORS)
    assert not authz.allows(EARNER, authz.CATALOG_EDITORS)
    assert not authz.allows(MEMBER, authz.CATALOG_EDITORS)
    assert not authz.allows(None, authz.CATALOG_EDITORS)


def test_the_catalog_is_the_operators_and_each_partner_its_own():
    writer = principal("partner", "catalog:write", partner_id=PARTNER)
    assert authz.catalog_owner(OPERATOR) is None
    assert authz.catalog_owner(writer) == PARTNER
    for p in (EARNER, MEMBER, principal("member", "member", "catalog:write")):
        with pytest.raises(authz.Denied):
            authz.catalog_owner(p)
    assert authz.catalog_partner(OPERATOR, OTHER) == OTHER
    assert authz.catalog_partner(OPERATOR, None) is None  # the use case asks for it
    assert authz.catalog_partner(writer, None) == PARTNER
    assert authz.catalog_partner(writer, PARTNER) == PARTNER
    with pytest.raises(authz.Denied):
        authz.catalog_partner(writer, OTHER)
