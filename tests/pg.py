"""A fresh PostgreSQL database per test, when FLOWERD_TEST_POSTGRES_URL names a server
whose user may create databases (.ci/run starts the machine's PostgreSQL and sets it)."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

ADMIN_URL = os.environ.get("FLOWERD_TEST_POSTGRES_URL", "")
needs_postgres = pytest.mark.skipif(not ADMIN_URL, reason="FLOWERD_TEST_POSTGRES_URL is not set")


@pytest.fixture
def pg_url():
    asyncpg = pytest.importorskip("asyncpg")
    name = f"flowerd_test_{uuid.uuid4().hex[:10]}"
    dsn = ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
