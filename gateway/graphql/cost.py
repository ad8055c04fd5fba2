"""The limits of a GraphQL document, checked at validation before anything runs: its cost, its
depth and its aliases. Over any of them, the operation is refused with the GraphQL error code
QUERY_TOO_COMPLEX and nothing is executed.

Cost = fields x requested list sizes: every field costs 1 (some heavy ones more, see
`FIELD_WEIGHTS`), and a field that returns several items multiplies the cost of what is selected
under it by how many it may return:

- a field with a `first` argument: its literal value, or for a variable the largest page the
  field allows (`VARIABLE_LIST_SIZE`, `MAX_FIRST`): the verdict is cached per document, so it
  cannot depend on the variables; the `edges` of such a connection do not multiply again;
- any other field returning a list: `DEFAULT_LIST_SIZE`.

Depth: nested field levels below the root (as Strawberry's QueryDepthLimiter counts them).
Aliases: aliased fields in the document, each fragment counted at every spread (as Strawberry's
MaxAliasesLimiter counts them).

Fragments (named and inline) and aliases count wherever they are used, yet each fragment is
walked once: Strawberry's own depth and alias limiters expand fragments every time they are
spread, so 25 fragments each spreading the next two (a 500-token query) kept them busy for
minutes. Introspection fields cost 1 and are not walked (they read no data; introspection is
off unless GRAPHQL_INTROSPECTION; GraphiQL's own query would cost about 50,000).

The rule depends only on the document, so the validation cache keeps its verdict: a repeated
query (the earn) costs nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
)
from graphql.validation import ValidationContext, ValidationRule

CODE = "QUERY_TOO_COMPLEX"
DEFAULT_LIST_SIZE = 10
VARIABLE_LIST_SIZE = 100  # the largest `first` of settlementPeriods and me.activity
MAX_FIRST = {("Query", "partners"): 500}  # fields allowing larger pages
# Fields whose resolver does far more work than reading rows: a seal verification recomputes
# the period from the ledger.
FIELD_WEIGHTS = {("SettlementPeriod", "verification"): 50}
# Deeper than any real query (the depth limit is 10): stop walking, call it too complex.
MAX_WALK_DEPTH = 64


@dataclass(frozen=True)
class Measure:
    """What a selection set costs, how many field levels it nests, how many aliases it has."""

    cost: int = 0
    levels: int = 0
    aliases: int = 0

    def __add__(self, other: Measure) -> Measure:
        return Measure(
            self.cost + other.cost, max(self.levels, other.levels), self.aliases + other.aliases
        )


_TOO_DEEP = Measure(cost=2**62, levels=2**62, aliases=0)


def query_limits_rule(*, max_cost: int, max_depth: int, max_aliases: int) -> type[ValidationRule]:
    """A validation rule refusing documents over the cost, depth or alias limit."""

    class QueryLimits(ValidationRule):
        def enter_document(self, node: DocumentNode, *_: Any) -> Any:
            aliases = 0
            for op in node.definitions:
                if not isinstance(op, OperationDefinitionNode):
                    continue
                m = measure_operation(self.context, op, limit=max_cost)
                aliases += m.aliases
                name = op.name.value if op.name else "anonymous"
                if m.levels - 1 > max_depth:
                    self._refuse(f"'{name}' exceeds maximum operation depth of {max_depth}", op)
                elif m.cost > max_cost:
                    self._refuse(
                        f"query too complex: it costs {m.cost}, the limit is {max_cost} "
                        "(fields x requested list sizes: ask for smaller pages or fewer fields)",
                        op,
                        cost=m.cost,
                        maxCost=max_cost,
                    )
            if aliases > max_aliases:
                self._refuse(f"{aliases} aliases found. Allowed: {max_aliases}", None)
            return self.SKIP

        def _refuse(self, message: str, node: Any, **extra: int) -> None:
            self.report_error(GraphQLError(message, node, extensions={"code": CODE, **extra}))

    return QueryLimits


def measure_operation(
    context: ValidationContext, node: OperationDefinitionNode, *, limit: int
) -> Measure:
    """Cost, levels and aliases of one operation of the document being validated (the cost is
    counted only until it passes `limit`)."""
    schema = context.schema
    root = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
        OperationType.SUBSCRIPTION: schema.subscription_type,
    }[node.operation]
    if root is None:
        return Measure()
    return _Walk(context, limit).selections(node.selection_set, root, 0, frozenset())


class _Walk:
    def __init__(self, context: ValidationContext, limit: int) -> None:
        self.context, self.limit = context, limit
        self.fragments: dict[str, Measure] = {}  # each fragment is measured once

    def selections(
        self, selection_set: SelectionSetNode, parent: Any, depth: int, seen: frozenset[str]
    ) -> Measure:
        if depth > MAX_WALK_DEPTH:
            return _TOO_DEEP
        total = Measure()
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                total += self.field(sel, parent, depth, seen)
            elif isinstance(sel, InlineFragmentNode):
                on = (
                    self.context.schema.get_type(sel.type_condition.name.value)
                    if sel.type_condition
                    else parent
                )
                total += self.selections(sel.selection_set, on or parent, depth + 1, seen)
            elif isinstance(sel, FragmentSpreadNode):
                total += self.fragment(sel.name.value, depth, seen)
            if total.cost > self.limit:
                break
        return total

    def fragment(self, name: str, depth: int, seen: frozenset[str]) -> Measure:
        if name in self.fragments:
            return self.fragments[name]
        fragment = self.context.get_fragment(name)
        if fragment is None or name in seen:  # unknown or cyclic: other rules report it
            return Measure()
        on = self.context.schema.get_type(fragment.type_condition.name.value)
        if on is None:
            return Measure()
        m = self.selections(fragment.selection_set, on, depth + 1, seen | {name})
        self.fragments[name] = m
        return m

    def field(self, node: FieldNode, parent: Any, depth: int, seen: frozenset[str]) -> Measure:
        alias = 1 if node.alias else 0
        name = node.name.value
        fields = (
            parent.fields if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType) else {}
        )
        definition = fields.get(name)
        weight = FIELD_WEIGHTS.get((getattr(parent, "name", ""), name), 1)
        if definition is None or node.selection_set is None:
            # A leaf, introspection (__typename, __schema, __type), or an unknown field
            # (another rule reports it).
            return Measure(weight, 1, alias)
        inner = self.selections(
            node.selection_set, get_named_type(definition.type), depth + 1, seen
        )
        return Measure(
            weight + self.list_size(node, definition, parent) * inner.cost,
            1 + inner.levels,
            alias + inner.aliases,
        )

    def list_size(self, node: FieldNode, definition: Any, parent: Any) -> int:
        if "first" in definition.args:
            arg = next((a for a in node.arguments or () if a.name.value == "first"), None)
            if arg is None:
                default = definition.args["first"].default_value
                return max(default, 1) if isinstance(default, int) else DEFAULT_LIST_SIZE
            if isinstance(arg.value, IntValueNode):
                digits = arg.value.value.lstrip("-")
                # Past Int's 32 bits it is invalid anyway (another rule says so); do not parse
                # a 5,000-digit literal.
                return max(int(arg.value.value), 1) if len(digits) <= 10 else 2**31
            return MAX_FIRST.get((parent.name, node.name.value), VARIABLE_LIST_SIZE)
        if is_list_type(get_nullable_type(definition.type)):
            if node.name.value == "edges" and parent.name.endswith("Connection"):
                return 1  # counted by the connection's `first`
            return DEFAULT_LIST_SIZE
        return 1
