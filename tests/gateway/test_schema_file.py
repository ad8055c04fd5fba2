"""The committed schema.graphql is what the server serves (`make schema` re-exports it)."""

from pathlib import Path

from gateway.graphql.schema import schema_sdl

ROOT = Path(__file__).resolve().parents[2]


def test_schema_graphql_is_current():
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == schema_sdl(), "schema.graphql is stale: run `make schema` and commit it"


def test_every_type_and_field_is_described():
    from graphql import (
        GraphQLEnumType,
        GraphQLInputObjectType,
        GraphQLInterfaceType,
        GraphQLObjectType,
        GraphQLUnionType,
    )

    from gateway.graphql.schema import build_schema

    schema = build_schema(introspection=True)._schema
    missing = []
    for name, t in schema.type_map.items():
        if name.startswith("__") or name in {"String", "Int", "Boolean", "ID", "Float"}:
            continue
        if name.startswith(("_", "link__")):  # Apollo Federation's own, described by its spec
            continue
        if isinstance(
            t,
            (
                GraphQLObjectType,
                GraphQLInputObjectType,
                GraphQLInterfaceType,
                GraphQLUnionType,
                GraphQLEnumType,
            ),
        ):
            if not t.description and not isinstance(t, GraphQLUnionType):
                missing.append(name)
        if isinstance(t, (GraphQLObjectType, GraphQLInputObjectType, GraphQLInterfaceType)):
            for fname, f in t.fields.items():
                if not f.description and not fname.startswith("_"):
                    missing.append(f"{name}.{fname}")
    assert not missing, f"undocumented: {missing}"
