"""The GraphQL schema: the domains' queries, mutations and subscriptions, assembled with the
schema's limits (cost, depth, aliases, tokens), its caches and error masking.

Every mutation follows the Relay convention `fooBar(input: FooBarInput!): FooBarResult!`
where the result is a union of `FooBarSuccess` and the error types (implementing `Error`) it
can return. Each domain's package (`members`, `partners`, `points`, `settlement`, `catalog`,
`bonuses`: bonus rules, a partner's bonus, transfers; `offers`; `tiers`; `operator`: the
console's views) holds its types,
inputs, queries and mutations; a resolver parses, calls one use case (`loyalty`) and maps the result.
"""

from __future__ import annotations

from typing import Any, cast

import strawberry
from graphql import GraphQLError
from graphql.validation import ASTValidationRule
from strawberry.extensions import AddValidationRules, MaskErrors, MaxTokensLimiter
from strawberry.federation.schema import FederationAny
from strawberry.types.info import Info

from core.settings import Settings
from gateway.graphql import errors as E
from gateway.graphql.bonuses.mutations import BonusesMutation
from gateway.graphql.bonuses.queries import BonusesQuery
from gateway.graphql.catalog.mutations import CatalogMutation
from gateway.graphql.catalog.queries import CatalogQuery
from gateway.graphql.cost import query_limits_rule
from gateway.graphql.documents import CachedDocuments, DocumentStore
from gateway.graphql.federation import Member
from gateway.graphql.inputs import RefusedInputHandler, add_input_checks
from gateway.graphql.members.mutations import MembersMutation
from gateway.graphql.members.queries import MembersQuery
from gateway.graphql.members.subscriptions import Subscription
from gateway.graphql.offers.mutations import OffersMutation
from gateway.graphql.offers.queries import OffersQuery
from gateway.graphql.operator.mutations import OperatorMutation
from gateway.graphql.operator.queries import OperatorQuery
from gateway.graphql.partners.mutations import PartnersMutation
from gateway.graphql.partners.queries import PartnersQuery
from gateway.graphql.points.mutations import PointsMutation
from gateway.graphql.settlement.mutations import SettlementMutation
from gateway.graphql.settlement.queries import SettlementQuery
from gateway.graphql.tiers.mutations import TiersMutation
from gateway.graphql.tiers.queries import TiersQuery
from gateway.graphql.webhooks.mutations import WebhooksMutation, WebhooksQuery


# The fields come in the order of the base classes (as in the committed schema.graphql).
@strawberry.type(description="Read operations.")
class Query(
    SettlementQuery,
    MembersQuery,
    PartnersQuery,
    BonusesQuery,
    CatalogQuery,
    OffersQuery,
    TiersQuery,
    OperatorQuery,
    WebhooksQuery,
):
    pass


@strawberry.type(
    description="Write operations. Every mutation that moves points takes an idempotencyKey."
)
class Mutation(
    SettlementMutation,
    PartnersMutation,
    MembersMutation,
    PointsMutation,
    BonusesMutation,
    CatalogMutation,
    OffersMutation,
    TiersMutation,
    OperatorMutation,
    WebhooksMutation,
):
    pass


# ---------------------------------------------------------------------------------------------
# The schema and its protections


MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 2000
MAX_CACHED_DOCUMENTS = 512
MAX_ENTITIES = 100  # representations per `_entities` request (each may cost a query)
ENTITY_TYPES = frozenset({"Member", "Partner"})
DEFAULT_MAX_COST = Settings.model_fields["graphql_max_cost"].default


def _should_mask(error: GraphQLError) -> bool:
    """Mask everything unexpected; validation, permission and our own GraphQLErrors pass."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


class _MaskErrors(MaskErrors):
    """Strawberry's masking, except that the database being out of reach is said as such
    (code UNAVAILABLE; the HTTP answer is then a 503 with Retry-After: `gateway.graphql.view`),
    so a client knows to retry with the same idempotency key rather than give up."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        if E.database_unavailable(error.original_error):
            return GraphQLError(
                E.UNAVAILABLE_MESSAGE,
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                extensions={"code": E.UNAVAILABLE},
            )
        return super().anonymise_error(error)


class _Schema(strawberry.federation.Schema):
    documents: DocumentStore  # the documents parsed and validated so far (`build_schema`)

    def get_fields(self, type_definition: Any) -> list[Any]:
        """Every field with arguments checks them before its resolver (gateway.graphql.inputs)."""
        return add_input_checks(super().get_fields(type_definition))

    def entities_resolver(
        self, info: Info, representations: list[FederationAny]
    ) -> list[FederationAny]:
        """Federation's `_entities`, for at most MAX_ENTITIES well-formed references to an
        entity type (`{"__typename", "id"}`): anything else is refused (VALIDATION) before any
        resolver runs."""
        if len(representations) > MAX_ENTITIES:
            raise GraphQLError(
                f"at most {MAX_ENTITIES} representations per request",
                extensions={"code": "VALIDATION"},
            )
        for rep in representations:
            if (
                not isinstance(rep, dict)
                or set(rep) != {"__typename", "id"}
                or rep["__typename"] not in ENTITY_TYPES
                or not isinstance(rep["id"], str)
            ):
                raise GraphQLError(
                    'a representation is {"__typename": "Member" or "Partner", "id": "<id>"}',
                    extensions={"code": "VALIDATION"},
                )
        # Copies: strawberry pops `__typename` from each (the variables stay as they came).
        copies: list[Any] = [dict(cast("dict[str, Any]", rep)) for rep in representations]
        return super().entities_resolver(info, copies)

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        """Log unexpected errors in full (they are masked for the client); expected ones
        (validation, permissions) are the caller's business, not the operator's."""
        from strawberry.utils.logging import StrawberryLogger

        for error in errors:
            if _should_mask(error):
                StrawberryLogger.error(error, execution_context)


def build_schema(*, introspection: bool, max_cost: int = DEFAULT_MAX_COST) -> strawberry.Schema:
    """The schema with its limits. Validation rules are built ONCE here, so the document
    cache (keyed by the text and the rules) hits across requests."""
    from graphql.validation import NoSchemaIntrospectionCustomRule

    rules: list[
        type[ASTValidationRule]
    ] = [  # cost, depth and aliases in one walk (gateway.graphql.cost)
        query_limits_rule(max_cost=max_cost, max_depth=MAX_DEPTH, max_aliases=MAX_ALIASES),
    ]
    if not introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    rules_tuple = list(rules)
    documents = DocumentStore(maxsize=MAX_CACHED_DOCUMENTS)  # this schema's, with its rules
    schema = _Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[*E.ERROR_TYPES, Member],
        federation_version="2.5",
        exception_handlers=[RefusedInputHandler()],
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            lambda: AddValidationRules(rules_tuple),
            lambda: CachedDocuments(documents),
            lambda: _MaskErrors(should_mask_error=_should_mask, error_message="Unexpected error."),
        ],
    )
    schema.documents = documents
    return schema


def schema_sdl() -> str:
    """The schema as SDL, as committed in `schema.graphql`."""
    from graphql.utilities.print_schema import print_directive, print_type

    schema = build_schema(introspection=True)
    sdl = schema.as_str()
    # Federation's SDL (`_service`) names @link and @key without defining them (the gateway
    # knows them); the committed file defines them, so that it is a schema of its own.
    types = schema._schema.type_map
    defined = [print_directive(d) for d in schema._schema.directives if d.name in {"key", "link"}]
    defined += [print_type(types[n]) for n in ("_FieldSet", "link__Import", "link__Purpose")]
    return "\n\n".join([*defined, sdl]) + "\n"
