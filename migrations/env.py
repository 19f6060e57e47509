"""Alembic environment for the history database, on the async engine.

flowerd builds the alembic Config in code (`daemon.history.alembic_config`), so there is
no alembic.ini. Two ways in:
- `History.open` / `flowerd db upgrade` hand over a connection already inside a
  transaction (BEGIN IMMEDIATE on SQLite) in `config.attributes["connection"]`; alembic
  then runs every step inside it, so two processes upgrading at once take turns.
- given only `sqlalchemy.url` (or a connection outside a transaction), each migration
  runs in its own transaction (`transaction_per_migration`), on an engine with flowerd's
  connection settings, through `AsyncConnection.run_sync`.
"""

from __future__ import annotations

import asyncio

from alembic import context

from daemon.history import metadata, writer_engine
from daemon.history.schema import with_postgresql

with_postgresql()  # the metadata as the migrations build it, for every dialect

config = context.config


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER by table copy
        transaction_per_migration=True,
        transactional_ddl=True,  # flowerd's SQLite engine emits BEGIN itself, so DDL is too
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    engine = writer_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_offline(url: str) -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")
if context.is_offline_mode():
    run_offline(config.get_main_option("sqlalchemy.url"))
elif given is not None:
    run_migrations(given)
else:
    asyncio.run(run_async_migrations(config.get_main_option("sqlalchemy.url")))
