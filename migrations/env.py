"""Alembic environment: synchronous psycopg 3 on the URL given by the runner."""

from alembic import context
from sqlalchemy import create_engine, pool

from migrations.runner import target_metadata

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set: migrate through migrations.runner")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # One migrator at a time: concurrent `migrate` calls (app + CLI) queue up here.
        connection.exec_driver_sql("SELECT pg_advisory_lock(727274)")
        connection.commit()
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.exec_driver_sql("SELECT pg_advisory_unlock(727274)")
        connection.commit()


run_migrations_online()
