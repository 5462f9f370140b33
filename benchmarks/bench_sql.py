"""Benchmark of the sql backend against plain SQLAlchemy Core doing the same statements.

Run: ``.venv/bin/python benchmarks/bench_sql.py`` (SQLite file in a temporary directory; add
``--pg URL`` to run on PostgreSQL too, e.g. with ``scripts/with-postgres`` and
``--pg "$MULTIBACKEND_TEST_PG_URL"``). Prints one JSON object a line::

    {"benchmark", "metric", "value", "unit", "baseline", "ratio"}

``ratio`` is the backend's speed relative to the baseline (throughput / baseline throughput, or
baseline latency / latency), so 1.0 means as fast as plain Core and higher is better; for
``peak_rss_growth`` it is the baseline's growth over the backend's (higher: the backend grew
less). Besides wall-clock figures, ``client_cpu_*`` lines compare the CPU time of this process
(all its threads; not the PostgreSQL server's), which a loaded machine disturbs far less.

Goals (issue 3): single creates >= 0.7, iter_streams >= 0.5 with flat memory, a filtered,
sorted page query >= 0.5 (within 2x).

Each iteration measurement runs in a fresh subprocess so that peak RSS growth is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from multibackend_sql import SqlBackend
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from multibackend.model import StreamDraft, StreamQuery
from multibackend.options import bind_options

CREATES = 200
ROWS = 100_000
PAGE_REPEATS = 10
STATUSES = ("Live", "Offline", "Unknown")


def make_backend(url: str) -> SqlBackend:
    options = bind_options(
        SqlBackend.Options,
        {"url": url, "create_schema": True},
        where="backends.bench",
    )
    return SqlBackend("bench", options)


def rss_bytes() -> int:
    """The current resident set size (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def line(
    benchmark: str, metric: str, value: float, unit: str, baseline: float, ratio: float
) -> None:
    print(
        json.dumps(
            {
                "benchmark": benchmark,
                "metric": metric,
                "value": round(value, 3),
                "unit": unit,
                "baseline": round(baseline, 3),
                "ratio": round(ratio, 3),
            }
        ),
        flush=True,
    )


async def best_of_alternating(
    rounds: int, ours: Callable[[], Awaitable[float]], plain: Callable[[], Awaitable[float]]
) -> tuple[float, float, float, float]:
    """Best wall time of each over ``rounds`` alternating runs, and best CPU time of each (this
    process, all threads: the client's work only). On a shared machine the load moves more
    than the code: alternating exposes both sides to the same load, and CPU time hardly
    depends on it."""
    await ours()  # warm up both (statement caches, WAL file, connections)
    await plain()
    walls: dict[str, list[float]] = {"ours": [], "plain": []}
    cpus: dict[str, list[float]] = {"ours": [], "plain": []}
    for _ in range(rounds):
        for side, fn in (("ours", ours), ("plain", plain)):
            cpu = time.process_time()
            walls[side].append(await fn())
            cpus[side].append(time.process_time() - cpu)
    return min(walls["ours"]), min(walls["plain"]), min(cpus["ours"]), min(cpus["plain"])


# --- single creates ------------------------------------------------------------------------


async def bench_creates(url: str, label: str) -> None:
    backend = make_backend(url)
    await backend.open()
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        table = await conn.run_sync(_reflect)
    insert = sa.insert(table).returning(*table.c)

    def draft(i: int) -> StreamDraft:
        return StreamDraft(source=f"s{i}", link=f"https://x.test/{i}", status="live")

    async def ours() -> float:
        start = time.perf_counter()
        for i in range(CREATES):
            await backend.create_stream(draft(i))
        return time.perf_counter() - start

    async def plain() -> float:
        start = time.perf_counter()
        for i in range(CREATES):
            now = datetime.now(UTC).replace(tzinfo=None) if "sqlite" in url else datetime.now(UTC)
            values = {
                "source": f"s{i}",
                "link": f"https://x.test/{i}",
                "status": "live",
                "is_pinned": False,
                "kind": "video",
                "is_archived": False,
                "last_checked_at": now,
                "last_live_at": now,
                "created_at": now,
                "updated_at": now,
            }
            async with engine.begin() as conn:
                (await conn.execute(insert, values)).one()
        return time.perf_counter() - start

    t_ours, t_plain, cpu_ours, cpu_plain = await best_of_alternating(5, ours, plain)
    line(
        f"sql.{label}.create_single",
        "throughput",
        CREATES / t_ours,
        "creates/s",
        CREATES / t_plain,
        t_plain / t_ours,
    )
    line(
        f"sql.{label}.create_single",
        "client_cpu_throughput",
        CREATES / cpu_ours,
        "creates/cpu-s",
        CREATES / cpu_plain,
        cpu_plain / cpu_ours,
    )
    await backend.close()
    await engine.dispose()


# --- a table of 100,000 rows ---------------------------------------------------------------


async def populate(url: str) -> None:
    backend = make_backend(url)
    await backend.open()  # creates the table
    await backend.close()
    engine = create_async_engine(url)
    sqlite = url.startswith("sqlite")
    base = datetime(2024, 1, 1, tzinfo=UTC)
    async with engine.begin() as conn:
        table = await conn.run_sync(_reflect)
        await conn.execute(sa.delete(table))
        batch: list[dict[str, Any]] = []
        for i in range(ROWS):
            ts = base + timedelta(seconds=i)
            batch.append(
                {
                    "source": f"source-{i % 997}",
                    "link": f"https://x.test/{i}",
                    "status": STATUSES[i % 3].lower(),
                    "is_pinned": i % 50 == 0,
                    "platform": "tiktok",
                    "kind": "video",
                    "city": "Austin",
                    "state": "TX",
                    "title": f"title {i}",
                    "is_archived": False,
                    "last_checked_at": ts.replace(tzinfo=None) if sqlite else ts,
                    "created_at": ts.replace(tzinfo=None) if sqlite else ts,
                    "updated_at": ts.replace(tzinfo=None) if sqlite else ts,
                }
            )
            if len(batch) == 5000:
                await conn.execute(sa.insert(table), batch)
                batch = []
    await engine.dispose()


def _reflect(conn: sa.Connection) -> sa.Table:
    return sa.Table("streams", sa.MetaData(), autoload_with=conn)


async def iterate(url: str, mode: str) -> dict[str, float]:
    """One full pass, in this (fresh) process: seconds, rows, peak RSS growth in bytes."""
    gc.collect()
    backend = make_backend(url)
    await backend.open()
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        table = await conn.run_sync(_reflect)
    # Warm both paths on a few rows so connection setup is not timed.
    async for _ in backend.iter_streams(StreamQuery()):
        break
    async with engine.connect() as conn:
        (await conn.execute(sa.select(table).limit(1))).all()
    gc.collect()
    start_rss = peak = rss_bytes()
    count = 0
    start = time.perf_counter()
    cpu = time.process_time()
    if mode == "ours":
        async for _ in backend.iter_streams():
            count += 1
            if count % 2000 == 0:
                peak = max(peak, rss_bytes())
    else:
        async with engine.connect() as conn:
            result = await conn.execute(sa.select(table))
            for _ in result:
                count += 1
                if count % 2000 == 0:
                    peak = max(peak, rss_bytes())
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    peak = max(peak, rss_bytes())
    await backend.close()
    await engine.dispose()
    return {"seconds": elapsed, "cpu": cpu, "rows": count, "rss_growth": peak - start_rss}


def iterate_in_subprocess(url: str, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--iterate", mode, url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def bench_iter(url: str, label: str) -> None:
    # Alternate the two, best of three each: the machine's load varies more than the code.
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "raw": []}
    for _ in range(3):
        for mode in runs:
            runs[mode].append(iterate_in_subprocess(url, mode))
    ours = min(runs["ours"], key=lambda r: r["seconds"])
    raw = min(runs["raw"], key=lambda r: r["seconds"])
    assert ours["rows"] == raw["rows"] == ROWS, (ours, raw)
    line(
        f"sql.{label}.iter_streams_100k",
        "throughput",
        ROWS / ours["seconds"],
        "rows/s",
        ROWS / raw["seconds"],
        raw["seconds"] / ours["seconds"],
    )
    cpu_ours = min(r["cpu"] for r in runs["ours"])
    cpu_raw = min(r["cpu"] for r in runs["raw"])
    line(
        f"sql.{label}.iter_streams_100k",
        "client_cpu_throughput",
        ROWS / cpu_ours,
        "rows/cpu-s",
        ROWS / cpu_raw,
        cpu_raw / cpu_ours,
    )
    mib = 1024 * 1024
    line(
        f"sql.{label}.iter_streams_100k",
        "peak_rss_growth",
        ours["rss_growth"] / mib,
        "MiB",
        raw["rss_growth"] / mib,
        raw["rss_growth"] / max(ours["rss_growth"], 1),
    )


async def bench_page(url: str, label: str) -> None:
    backend = make_backend(url)
    await backend.open()
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        table = await conn.run_sync(_reflect)
    query = StreamQuery(status="live", sort="-created", page=3, per_page=25)
    where = table.c.status == "live"
    page_stmt = (
        sa.select(table)
        .where(where)
        .order_by(table.c.created_at.desc().nulls_first(), table.c.id.desc())
        .limit(25)
        .offset(50)
    )
    count_stmt = sa.select(sa.func.count()).select_from(table).where(where)

    async def ours() -> float:
        start = time.perf_counter()
        for _ in range(PAGE_REPEATS):
            page = await backend.list_streams(query)
            assert len(page.items) == 25
        return (time.perf_counter() - start) / PAGE_REPEATS

    async def plain() -> float:
        start = time.perf_counter()
        for _ in range(PAGE_REPEATS):
            async with engine.connect() as conn:
                rows = (await conn.execute(page_stmt)).all()
                (await conn.execute(count_stmt)).scalar_one()
            assert len(rows) == 25
        return (time.perf_counter() - start) / PAGE_REPEATS

    t_ours, t_plain, cpu_ours, cpu_plain = await best_of_alternating(5, ours, plain)
    line(
        f"sql.{label}.filtered_sorted_page_100k",
        "latency",
        t_ours * 1000,
        "ms",
        t_plain * 1000,
        t_plain / t_ours,
    )
    line(
        f"sql.{label}.filtered_sorted_page_100k",
        "client_cpu_latency",
        cpu_ours / PAGE_REPEATS * 1000,
        "cpu-ms",
        cpu_plain / PAGE_REPEATS * 1000,
        cpu_plain / cpu_ours,
    )
    await backend.close()
    await engine.dispose()


async def run(url: str, label: str) -> None:
    await bench_creates(url, label)
    await populate(url)
    bench_iter(url, label)
    await bench_page(url, label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pg", help="also run on this PostgreSQL URL (tables are replaced)")
    parser.add_argument("--iterate", nargs=2, metavar=("MODE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.iterate:
        mode, url = args.iterate
        print(json.dumps(asyncio.run(iterate(url, mode))))
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", "sqlite"))
    if args.pg:
        asyncio.run(_drop_pg(args.pg))
        asyncio.run(run(args.pg, "postgresql"))
    print(f"# total {time.perf_counter() - started:.1f} s", file=sys.stderr)


async def _drop_pg(url: str) -> None:
    engine: AsyncEngine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP TABLE IF EXISTS streams"))
    await engine.dispose()


if __name__ == "__main__":
    main()
