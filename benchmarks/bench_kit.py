"""Benchmarks of the plugin kit: registry discovery, the memory backend, FaultyBackend overhead.

Prints one JSON line per figure: {"benchmark", "metric", "value", "unit", "baseline", "ratio"},
each baseline measured in the same run (ratio = value / baseline).

    .venv/bin/python benchmarks/bench_kit.py
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import time
from collections.abc import Awaitable, Callable

from multibackend.model import StreamDraft, StreamQuery
from multibackend.registry import GROUP, available_plugins, load_backend
from multibackend.testing.faulty import FaultyBackend


def emit(benchmark: str, metric: str, value: float, unit: str, baseline: float) -> None:
    print(
        json.dumps(
            {
                "benchmark": benchmark,
                "metric": metric,
                "value": round(value, 3),
                "unit": unit,
                "baseline": round(baseline, 3),
                "ratio": round(value / baseline, 2) if baseline else None,
            }
        )
    )


def per_call_us(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


async def per_call_us_async(fn: Callable[[], Awaitable[object]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n * 1e6


async def main() -> None:
    # Discovery: our full scan (enumerate, load, check) against enumerating the group alone.
    base = per_call_us(lambda: list(importlib.metadata.entry_points(group=GROUP)), 50)
    scan = per_call_us(available_plugins, 50)
    emit("registry", "available_plugins", scan, "us/call", base)

    async with load_backend("memory") as memory:
        drafts = [StreamDraft(source=f"s{i}", link=f"https://x.test/{i}") for i in range(10_000)]
        start = time.perf_counter()
        result = await memory.bulk_import(drafts)  # type: ignore[attr-defined]
        bulk = (time.perf_counter() - start) / len(drafts) * 1e6
        start = time.perf_counter()
        for d in drafts[:2000]:
            await memory.create_stream(d)
        single = (time.perf_counter() - start) / 2000 * 1e6
        emit("memory", "bulk_import per stream", bulk, "us/stream", single)
        assert result.imported == len(drafts)

        some_id = result.ids[0]
        direct = await per_call_us_async(lambda: memory.get_stream(some_id), 20_000)
        faulty = FaultyBackend(memory)
        wrapped = await per_call_us_async(lambda: faulty.get_stream(some_id), 20_000)
        emit("faulty", "get_stream through the wrapper (no faults)", wrapped, "us/call", direct)

        # A first page over 12,000 streams (filter + sort + slice) against sorting them alone.
        rows = [s async for s in memory.iter_streams()]
        sort_only = per_call_us(
            lambda: sorted(rows, key=lambda s: (s.is_pinned, s.created_at, s.id), reverse=True),
            50,
        )
        page = await per_call_us_async(lambda: memory.list_streams(StreamQuery()), 50)
        emit("memory", "list_streams first page of 12k", page, "us/call", sort_only)


if __name__ == "__main__":
    asyncio.run(main())
