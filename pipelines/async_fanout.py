"""Independent `async def` nodes: under the async driver each is an asyncio task, so the
three fetches overlap (about one delay in total, not three)."""

import asyncio


async def fetch_a(delay_s: float = 0.01) -> int:
    await asyncio.sleep(delay_s)
    return 1


async def fetch_b(delay_s: float = 0.01) -> int:
    await asyncio.sleep(delay_s)
    return 2


async def fetch_c(delay_s: float = 0.01) -> int:
    await asyncio.sleep(delay_s)
    return 3


async def total(fetch_a: int, fetch_b: int, fetch_c: int) -> int:
    return fetch_a + fetch_b + fetch_c
