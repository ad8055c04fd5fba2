"""Customers: identity, card numbers, tiers, redemption codes."""
