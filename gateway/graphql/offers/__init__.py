"""GraphQL of offers and promo codes."""
