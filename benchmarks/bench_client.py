"""Benchmarks of the StreamSource client against the emulator (in-process, real HTTP on 127.0.0.1).

Prints one JSON line per figure: {"benchmark", "metric", "value", "unit", "baseline", "ratio"},
each baseline measured in the same run; ratio = value / baseline.

* get_stream / create_stream at 32 concurrent tasks: the backend's calls per second against raw
  aiohttp calls (same session settings, same token) to the same emulator. Goal: ratio >= 0.8.
* a walk of 10,000 streams: iter_streams against raw paged GETs (streams per second; goal >= 0.8),
  and the walk's peak traced memory over 10,000 streams against over 1,000 (flat: ratio ~ 1).
* budget accuracy: emulator limited to 500 requests per 5 s window, client told the same budget,
  3,000 creates: achieved rate against the allowed rate (goal >= 0.95) and the 429s (goal 0).

    .venv/bin/python benchmarks/bench_client.py            # everything (about a minute)
    .venv/bin/python benchmarks/bench_client.py --quick    # smaller counts, no budget run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from multibackend_streamsource.backend import StreamSourceBackend
from multibackend_streamsource.emulator import UserSpec, run_emulator
from multibackend_streamsource.options import Options

from multibackend.model import StreamDraft, StreamQuery

EMAIL = "bench@example.com"
PASSWORD = "Bench-Passw0rd"
CONCURRENCY = 32


def emit(benchmark: str, metric: str, value: float, unit: str, baseline: float) -> None:
    print(
        json.dumps(
            {
                "benchmark": benchmark,
                "metric": metric,
                "value": round(value, 3),
                "unit": unit,
                "baseline": round(baseline, 3),
                "ratio": round(value / baseline, 3) if baseline else None,
            }
        ),
        flush=True,
    )


async def rate(n: int, one: Callable[[int], Awaitable[object]], concurrency: int) -> float:
    """Calls per second of ``n`` calls of ``one(i)`` spread over ``concurrency`` tasks."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


def options(base_url: str, **kw: Any) -> Options:
    kw.setdefault("requests_per_minute", 1_000_000_000)  # the budget is measured separately
    return Options(base_url=base_url, email=EMAIL, password=PASSWORD, **kw)


def raw_session() -> aiohttp.ClientSession:
    # The same pool and timeouts the backend uses.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64, limit_per_host=64),
        timeout=aiohttp.ClientTimeout(total=30, connect=10),
        headers={"Accept": "application/json"},
    )


async def crud(quick: bool) -> None:
    n = 600 if quick else 3000
    async with run_emulator(users=[UserSpec(email=EMAIL, password=PASSWORD)]) as emu:
        emu.set_rate_limit(1_000_000_000, 60.0)
        url = emu.base_url
        async with StreamSourceBackend("bench", options(url)) as backend, raw_session() as http:
            token = await backend.auth.bearer()
            auth = {"Authorization": f"Bearer {token}"}
            seed = await backend.create_stream(StreamDraft(source="s", link="https://x.test/s"))

            async def raw_get(i: int) -> object:
                async with http.get(f"{url}/api/v1/streams/{seed.id}", headers=auth) as r:
                    assert r.status == 200
                    return await r.json()

            async def client_get(i: int) -> object:
                return await backend.get_stream(seed.id)

            async def raw_create(i: int) -> object:
                body = {"source": f"raw{i}", "link": f"https://x.test/raw/{i}", "status": "live"}
                async with http.post(f"{url}/api/v1/streams", json=body, headers=auth) as r:
                    assert r.status == 201
                    return await r.json()

            async def client_create(i: int) -> object:
                draft = StreamDraft(source=f"c{i}", link=f"https://x.test/c/{i}", status="live")
                return await backend.create_stream(draft)

            # Warm both paths, then alternate the measurements so neither gets a warmer server.
            await rate(200, raw_get, CONCURRENCY)
            await rate(200, client_get, CONCURRENCY)
            raw_g, cli_g, raw_c, cli_c = [], [], [], []
            for _ in range(3):
                raw_g.append(await rate(n, raw_get, CONCURRENCY))
                cli_g.append(await rate(n, client_get, CONCURRENCY))
                raw_c.append(await rate(n // 2, raw_create, CONCURRENCY))
                cli_c.append(await rate(n // 2, client_create, CONCURRENCY))
            emit("client", "get_stream x32 concurrent", max(cli_g), "calls/s", max(raw_g))
            emit("client", "create_stream x32 concurrent", max(cli_c), "calls/s", max(raw_c))


async def walk(quick: bool) -> None:
    total = 2_000 if quick else 10_000
    async with run_emulator(users=[UserSpec(email=EMAIL, password=PASSWORD)]) as emu:
        emu.set_rate_limit(1_000_000_000, 60.0)
        url = emu.base_url
        opts = options(url, per_page=100, bulk_chunk_size=100)
        async with StreamSourceBackend("bench", opts) as backend, raw_session() as http:
            drafts = [
                StreamDraft(source=f"w{i}", link=f"https://x.test/w/{i}") for i in range(total)
            ]
            result = await backend.bulk_import(drafts)
            assert result.imported == total, result
            token = await backend.auth.bearer()
            auth = {"Authorization": f"Bearer {token}"}

            async def raw_walk() -> int:
                seen, page = 0, 1
                while True:
                    params = {"page": str(page), "per_page": "100", "sort": "created"}
                    async with http.get(f"{url}/api/v1/streams", params=params, headers=auth) as r:
                        body = await r.json()
                    seen += len(body["streams"])
                    if len(body["streams"]) < 100 or page >= body["meta"]["total_pages"]:
                        return seen
                    page += 1

            async def client_walk(limit: int | None = None) -> int:
                seen = 0
                async for _ in backend.iter_streams(StreamQuery()):
                    seen += 1
                    if limit is not None and seen >= limit:
                        break
                return seen

            raw_rates, cli_rates = [], []
            for _ in range(3):
                start = time.perf_counter()
                assert await raw_walk() == total
                raw_rates.append(total / (time.perf_counter() - start))
                start = time.perf_counter()
                assert await client_walk() == total
                cli_rates.append(total / (time.perf_counter() - start))
            emit(
                "client",
                f"iter_streams walk of {total:,}",
                max(cli_rates),
                "streams/s",
                max(raw_rates),
            )

            # Memory: the walk's peak over everything against over a tenth of it. The emulator
            # shares the process, so its allocations are in both figures alike.
            peaks = []
            for limit in (total // 10, total):
                tracemalloc.start()
                await client_walk(limit)
                peaks.append(tracemalloc.get_traced_memory()[1] / 1024)
                tracemalloc.stop()
            emit(
                "client",
                f"iter_streams peak memory, {total:,} vs {total // 10:,} streams",
                peaks[1],
                "KiB",
                peaks[0],
            )


async def budget() -> None:
    limit, window, creates = 500, 5.0, 3000
    async with run_emulator(users=[UserSpec(email=EMAIL, password=PASSWORD)]) as emu:
        emu.set_rate_limit(limit, window)
        opts = options(emu.base_url, rate_limit_requests=limit, rate_limit_window=window)
        emu.reset_counters()
        async with StreamSourceBackend("bench", opts) as backend:
            start = time.perf_counter()

            async def create(i: int) -> object:
                draft = StreamDraft(source=f"b{i}", link=f"https://x.test/b/{i}")
                return await backend.create_stream(draft)

            await rate(creates, create, 64)
            elapsed = time.perf_counter() - start
        counters = emu.counters()
        sent = counters.requests  # the creates and the login
        emit(
            "client",
            f"budget {limit}/{window:g}s: achieved rate of {creates:,} creates",
            sent / elapsed,
            "requests/s",
            limit / window,
        )
        emit("client", "budget: 429 answers received", counters.throttled, "count", 0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, no budget run")
    args = parser.parse_args()
    await crud(args.quick)
    await walk(args.quick)
    if not args.quick:
        await budget()


if __name__ == "__main__":
    asyncio.run(main())
