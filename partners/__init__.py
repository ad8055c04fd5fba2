"""Merchants: registry, agreements (prices), earn rules, OAuth clients."""
