"""PipelineManager.run / run_async against raw Hamilton execute on the same module, same
process. Ratios are what count (the VM is noisy); absolute medians are printed too.

    make bench     (or: .venv/bin/python benchmarks/bench_pipeline.py)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N = 3000
ROUNDS = 5


def _median_us(fn, n: int = N) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


async def _amedian_us(fn, n: int = N) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def bench_sync() -> tuple[float, float]:
    from hamilton import driver

    from daemon import PipelineManager

    pm = PipelineManager(ROOT)
    pm.run("hello_world", final_vars=["full_greeting"])  # load + build once
    module = sys.modules["hello_world"]
    raw = driver.Builder().with_modules(module).build()
    inputs = {"name": "bench"}
    raw_us = _median_us(lambda: raw.execute(["full_greeting"], inputs=inputs))
    ours_us = _median_us(lambda: pm.run("hello_world", final_vars=["full_greeting"], inputs=inputs))
    return raw_us, ours_us


async def bench_async() -> tuple[float, float]:
    from hamilton import async_driver

    from daemon import PipelineManager

    pm = PipelineManager(ROOT)
    await pm.run_async("hello_world", final_vars=["full_greeting"])
    module = sys.modules["hello_world"]
    raw = await async_driver.Builder().with_modules(module).build()
    inputs = {"name": "bench"}
    raw_us = await _amedian_us(lambda: raw.execute(["full_greeting"], inputs=inputs))
    ours_us = await _amedian_us(
        lambda: pm.run_async("hello_world", final_vars=["full_greeting"], inputs=inputs)
    )
    return raw_us, ours_us


def main() -> dict[str, float]:
    raw_s, ours_s = bench_sync()
    raw_a, ours_a = asyncio.run(bench_async())
    print("pipeline overhead (hello_world, median per run, same process)")
    print(f"  sync : raw driver.execute {raw_s:7.1f} us   pm.run       {ours_s:7.1f} us"
          f"   ratio {ours_s / raw_s:.2f}x  (goal <= 1.5x)")
    print(f"  async: raw await execute  {raw_a:7.1f} us   pm.run_async {ours_a:7.1f} us"
          f"   ratio {ours_a / raw_a:.2f}x  (goal <= 1.5x)")
    return {"sync_ratio": ours_s / raw_s, "async_ratio": ours_a / raw_a}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
