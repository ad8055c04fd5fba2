"""Catalog tables (rewards, offers) come with their issue."""
