"""Alembic migrations. `coalition migrate` applies them (see `migrations.runner`)."""
