"""GraphQL of the points domain: types, inputs, queries, mutations."""
