"""GraphQL of bonuses, referrals and transfers: types, inputs, queries, mutations."""
