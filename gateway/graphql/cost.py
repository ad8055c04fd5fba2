"""The query cost limit: a validation rule that prices an operation before anything runs.

Cost = fields x requested list sizes: every field costs 1 (some heavy ones more, see
`FIELD_WEIGHTS`), and a field that returns several items multiplies the cost of what is selected
under it by how many it may return:

- a field with a `first` argument: its literal value, or for a variable the largest page the
  field allows (`VARIABLE_LIST_SIZE`, `MAX_FIRST`): the verdict is cached per document, so it
  cannot depend on the variables; the `edges` of such a connection do not multiply again;
- any other field returning a list: `DEFAULT_LIST_SIZE`.

Fragments (named and inline) and aliases count wherever they are used. The rule depends only on
the document, so the validation cache keeps its verdict: a repeated query (the earn) costs
nothing more. An operation over the limit is refused at validation, with the GraphQL error code
QUERY_TOO_COMPLEX and no execution at all.
"""

from __future__ import annotations

from typing import Any

from graphql import (
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

DEFAULT_LIST_SIZE = 10
VARIABLE_LIST_SIZE = 100  # the largest `first` of settlementPeriods and me.activity
MAX_FIRST = {("Query", "partners"): 500}  # fields allowing larger pages
# Fields whose resolver does far more work than reading rows: a seal verification recomputes
# the period from the ledger.
FIELD_WEIGHTS = {("SettlementPeriod", "verification"): 50}
# Deeper than any real query (the depth limit is 10): stop walking and call it too complex.
MAX_WALK_DEPTH = 64


def query_cost_rule(max_cost: int) -> type[ValidationRule]:
    """A validation rule refusing operations that cost more than `max_cost`."""

    class QueryCost(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> Any:
            cost = operation_cost(self.context, node, limit=max_cost)
            if cost > max_cost:
                self.report_error(
                    GraphQLError(
                        f"query too complex: it costs {cost}, the limit is {max_cost} "
                        "(fields x requested list sizes: ask for smaller pages or fewer fields)",
                        node,
                        extensions={"code": "QUERY_TOO_COMPLEX", "cost": cost, "maxCost": max_cost},
                    )
                )
            return self.SKIP

    return QueryCost


def operation_cost(context: ValidationContext, node: OperationDefinitionNode, *, limit: int) -> int:
    """The cost of one operation of the document being validated (stops counting past `limit`)."""
    schema = context.schema
    root = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
        OperationType.SUBSCRIPTION: schema.subscription_type,
    }[node.operation]
    if root is None:
        return 0
    return _Walk(context, limit).selections(node.selection_set, root, 0, frozenset())


class _Walk:
    def __init__(self, context: ValidationContext, limit: int) -> None:
        self.context, self.limit = context, limit
        # A fragment costs the same wherever it is spread: computed once (a chain of fragments
        # each spreading the next twice must not take exponential time).
        self.fragments: dict[str, int] = {}

    def selections(
        self, selection_set: SelectionSetNode, parent: Any, depth: int, seen: frozenset[str]
    ) -> int:
        if depth > MAX_WALK_DEPTH:
            return self.limit + 1
        total = 0
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
            if total > self.limit:
                break
        return total

    def fragment(self, name: str, depth: int, seen: frozenset[str]) -> int:
        if name in self.fragments:
            return self.fragments[name]
        fragment = self.context.get_fragment(name)
        if fragment is None or name in seen:  # unknown or cyclic: other rules report it
            return 0
        on = self.context.schema.get_type(fragment.type_condition.name.value)
        if on is None:
            return 0
        cost = self.selections(fragment.selection_set, on, depth + 1, seen | {name})
        self.fragments[name] = cost
        return cost

    def field(self, node: FieldNode, parent: Any, depth: int, seen: frozenset[str]) -> int:
        fields = (
            parent.fields if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType) else {}
        )
        definition = fields.get(node.name.value)
        weight = FIELD_WEIGHTS.get((getattr(parent, "name", ""), node.name.value), 1)
        if definition is None or node.selection_set is None:
            return weight  # a leaf, __typename, or unknown (another rule reports it)
        child = get_named_type(definition.type)
        inner = self.selections(node.selection_set, child, depth + 1, seen)
        return weight + self.list_size(node, definition, parent) * inner

    def list_size(self, node: FieldNode, definition: Any, parent: Any) -> int:
        if "first" in definition.args:
            arg = next((a for a in node.arguments or () if a.name.value == "first"), None)
            if arg is None:
                default = definition.args["first"].default_value
                return max(default, 1) if isinstance(default, int) else DEFAULT_LIST_SIZE
            if isinstance(arg.value, IntValueNode):
                return max(int(arg.value.value), 1)
            return MAX_FIRST.get((parent.name, node.name.value), VARIABLE_LIST_SIZE)
        if is_list_type(get_nullable_type(definition.type)):
            if node.name.value == "edges" and parent.name.endswith("Connection"):
                return 1  # counted by the connection's `first`
            return DEFAULT_LIST_SIZE
        return 1
