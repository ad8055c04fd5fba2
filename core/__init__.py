"""Shared kernel: settings, database, errors, money, clock, identifiers."""
