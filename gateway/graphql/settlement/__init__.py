"""GraphQL of the settlement domain: types, inputs, queries, mutations."""
