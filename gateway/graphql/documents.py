"""Parsed documents and their validation verdicts, remembered by the query's text.

Partners send the same few documents over and over (the earn's, with its values in variables):
parsing and validating each once is enough. Strawberry's ParserCache and ValidationCache did
that in two lookups, the second keyed by the parsed document, whose hash graphql-core
recomputes over every node of it on every request (the earn's document: a few dozen nodes,
about as much CPU as the rest of the lookups together). Here one lookup by the text gives both.

What is cached depends only on the document, never on the request: the parse, and the
verdict of every validation rule (including the cost, depth and alias limits of
`gateway.graphql.cost`, which are validation rules for that reason). A cached document is
refused again on every request, with the same errors; one that passed is still executed per
request with that request's variables, which graphql-core coerces and every resolver's input
check (`gateway.graphql.inputs`) sees as before. Bounded: the least recently used documents go.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import DocumentNode, GraphQLError
from strawberry.extensions import SchemaExtension


@dataclass(frozen=True, slots=True)
class _Checked:
    document: DocumentNode
    errors: tuple[GraphQLError, ...]  # validation's verdict: empty when the document passed


class DocumentStore:
    """The documents one schema has parsed and validated, at most `maxsize` of them. The key is
    the text and the validation rules: the parse options are the schema's own (its token
    limit), fixed when it is built."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.hits = 0  # requests answered from the store
        self._entries: OrderedDict[tuple[str, tuple[Any, ...]], _Checked] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, tuple[Any, ...]]) -> _Checked | None:
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, tuple[Any, ...]], entry: _Checked) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)


class CachedDocuments(SchemaExtension):
    """Takes the parsed document and its validation verdict from the store when the text was
    seen before; otherwise lets Strawberry parse and validate, and stores what came out."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._key: tuple[str, tuple[Any, ...]] | None = None
        self._hit: _Checked | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is None and context.query:
            self._key = (context.query, tuple(context.validation_rules))
            self._hit = self.store.get(self._key)
            if self._hit is not None:
                context.graphql_document = self._hit.document
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if self._hit is not None:
            # A fresh list: the request's errors may be replaced or added to downstream.
            context.pre_execution_errors = list(self._hit.errors)
            yield
            return
        yield
        document, errors = context.graphql_document, context.pre_execution_errors
        if self._key is not None and document is not None and errors is not None:
            self.store.put(self._key, _Checked(document, tuple(errors)))
