"""Each mutation's result union lists the error types it can return, and no others: those of
the codes its use case raises (the tables in `loyalty`) and the gateway's own refusals (a
caller without the scope: FORBIDDEN; an unstorable argument: VALIDATION)."""

from __future__ import annotations

import pytest
from graphql import GraphQLNonNull, GraphQLUnionType

from core.errors import ErrorCode
from gateway.graphql import errors as E
from gateway.graphql.schema import build_schema
from gateway.graphql.settlement import mutations as settlement
from loyalty import (
    bonuses,
    earn,
    offers,
    redeem,
    refund,
    register,
    rewards,
    terms,
    tiers,
    transfers,
    webhooks,
)

GUARDED = {ErrorCode.FORBIDDEN, ErrorCode.VALIDATION}

CAN_RETURN: dict[str, set[ErrorCode]] = {
    "createPartner": {*terms.CREATE_PARTNER_ERRORS, *GUARDED},
    "setAgreement": {*terms.SET_AGREEMENT_ERRORS, *GUARDED},
    "setEarnRule": {*terms.SET_EARN_RULE_ERRORS, *GUARDED},
    "createPartnerClient": {*terms.CREATE_CLIENT_ERRORS, *GUARDED},
    "disablePartnerClient": {*terms.CHANGE_CLIENT_ERRORS, *GUARDED},
    "rotatePartnerClientSecret": {*terms.CHANGE_CLIENT_ERRORS, *GUARDED},
    "registerMember": {*register.ERRORS, ErrorCode.RATE_LIMITED, ErrorCode.VALIDATION},
    "earn": {*earn.ERRORS, *GUARDED},
    "refund": {*refund.ERRORS, *GUARDED},
    "authorizeRedemption": {*redeem.AUTHORIZE_ERRORS, *GUARDED},
    "captureRedemption": {*redeem.CAPTURE_ERRORS, *GUARDED},
    "voidRedemption": {*redeem.VOID_ERRORS, *GUARDED},
    "createRedemptionCode": {*redeem.ISSUE_CODE_ERRORS, *GUARDED},
    "setBonusRules": {*bonuses.SET_RULES_ERRORS, *GUARDED},
    "awardBonus": {*bonuses.AWARD_ERRORS, *GUARDED},
    "transferPoints": {*transfers.ERRORS, *GUARDED},
    "runSettlement": {*settlement.RUN_ERRORS, *GUARDED},
    "closeSettlementPeriod": {*settlement.CLOSE_ERRORS, *GUARDED},
    "reconcileStatement": {*settlement.RECONCILE_ERRORS, *GUARDED},
    "publishReward": {*rewards.PUBLISH_ERRORS, *GUARDED},
    "updateReward": {*rewards.CHANGE_ERRORS, *GUARDED},
    "retireReward": {*rewards.CHANGE_ERRORS, *GUARDED},
    "addVoucherCodes": {*rewards.CHANGE_ERRORS, *GUARDED},
    "redeemReward": {*rewards.REDEEM_ERRORS, *GUARDED},
    "createOffer": {*offers.CREATE_ERRORS, *GUARDED},
    "endOffer": {*offers.END_ERRORS, *GUARDED},
    "activateOffer": {*offers.ACTIVATE_ERRORS, *GUARDED},
    "createPromoCode": {*offers.CREATE_PROMO_ERRORS, *GUARDED},
    "applyPromoCode": {*offers.APPLY_PROMO_ERRORS, *GUARDED},
    "setTiers": {*tiers.SET_TIERS_ERRORS, *GUARDED},
    "runTierReview": {*tiers.REVIEW_ERRORS, *GUARDED},
    "createWebhook": {*webhooks.CREATE_ERRORS, *GUARDED},
    "deleteWebhook": {*webhooks.CHANGE_ERRORS, *GUARDED},
    "redeliverWebhook": {*webhooks.CHANGE_ERRORS, *GUARDED},
}

SCHEMA = build_schema(introspection=True)._schema
MUTATIONS = SCHEMA.mutation_type.fields


def test_every_mutation_has_its_table():
    assert set(MUTATIONS) == set(CAN_RETURN)


@pytest.mark.parametrize("name", sorted(CAN_RETURN))
def test_union_lists_the_errors_the_mutation_can_return(name):
    result = MUTATIONS[name].type
    assert isinstance(result, GraphQLNonNull) and isinstance(result.of_type, GraphQLUnionType)
    members = {t.name for t in result.of_type.types}
    errors = {n for n in members if not n.endswith("Success")}
    assert errors == {E.error_types([c])[0].__name__ for c in CAN_RETURN[name]}
