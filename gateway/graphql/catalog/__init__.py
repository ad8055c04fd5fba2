"""GraphQL of the rewards catalog: types, inputs, queries, mutations."""
