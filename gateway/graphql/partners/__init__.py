"""GraphQL of the partners domain: types, inputs, queries, mutations."""
