"""Status tiers in GraphQL."""
