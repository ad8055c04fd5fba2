"""GraphQL of the members domain: types, inputs, queries, mutations."""
