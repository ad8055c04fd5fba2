"""The coalition currency: accounts, double-entry transactions, lots, holds, idempotency."""
