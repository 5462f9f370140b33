"""Migration tools, each against a baseline measured in the same run.

- backfill_sql_to_memory: backfill of N rows (default 100,000) from ``sql`` (SQLite) into
  ``memory`` through the journal, against a raw loop reading the same rows and writing them with
  ``bulk_import`` in chunks of the same size (goal: ratio >= 0.5). Peak memory: the Python heap
  the run needed beyond what the target retains, at N/5 and at N rows (flat: similar figures).
- backfill_emulator: into the StreamSource emulator over real HTTP, bulk import against per-item
  creates (both rates printed).
- backfill_emulator_rate_limited: per-item creates under a server rate limit equal to the
  client's budget: achieved request rate against the allowed rate (goal >= 0.95), and 429s
  (goal 0).
- verify_sql_memory: verify of N entities ``sql`` against ``memory``, against the raw read rate of
  both sides (reading A fully, then B fully; goal ratio >= 0.5).
- cutover_check: manager writes per second with the per-write cutover version check against the
  same writes without it, and the check alone (one read of the version) against a whole write.

Run: ``.venv/bin/python benchmarks/bench_migrate.py [--rows N] [--only NAME ...]``. One JSON line
a figure:
{"benchmark", "metric", "value", "unit", "baseline", "ratio"}.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from multibackend.journal.store import JournalStore
from multibackend.manager import BackendManager
from multibackend.migrate import Backfill, Verifier
from multibackend.migrate.phases import read_version
from multibackend.migrate.scan import scan_streams
from multibackend.model import StreamDraft, StreamPatch, StreamQuery
from multibackend.registry import load_backend


def emit(benchmark: str, metric: str, value: float, baseline: float, unit: str) -> None:
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


def drafts(count: int, prefix: str = "s") -> list[StreamDraft]:
    return [
        StreamDraft(
            source=f"{prefix}{i % 500}",
            link=f"https://twitch.tv/{prefix}{i}",
            title=f"title {i}",
            status=("live", "offline", "unknown")[i % 3],
            city="Austin" if i % 4 == 0 else None,
        )
        for i in range(count)
    ]


async def sql_source(folder: Path, rows: int) -> Any:
    src = load_backend(
        "sql", name="legacy", url=f"sqlite+aiosqlite:///{folder}/legacy.db", create_schema=True
    )
    await src.open()
    for start in range(0, rows, 10_000):
        await src.bulk_import(drafts(min(10_000, rows - start), prefix=f"p{start}-"))
    return src


async def backfill_once(
    folder: Path, src: Any, batch: int, journal: str | None = None
) -> tuple[float, Any, Any]:
    dst = load_backend("memory", name="new")
    await dst.open()
    url = journal or f"sqlite+aiosqlite:///{folder}/journal-{time.monotonic_ns()}.db"
    store = JournalStore(url)
    await store.open()
    started = time.perf_counter()
    result = await Backfill(store, src, dst, batch=batch, bulk_chunk=batch).run()
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed, result, dst


async def raw_copy(src: Any, batch: int) -> float:
    dst = load_backend("memory", name="raw")
    await dst.open()
    started = time.perf_counter()
    chunk: list[StreamDraft] = []
    async for stream in src.iter_streams(StreamQuery()):
        chunk.append(stream.to_draft())
        if len(chunk) >= batch:
            await dst.bulk_import(chunk)
            chunk = []
    if chunk:
        await dst.bulk_import(chunk)
    return time.perf_counter() - started


async def bench_backfill_sql_memory(rows: int) -> None:
    batch = 1000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src = await sql_source(folder, rows)
        raw = await raw_copy(src, batch)
        elapsed, result, _ = await backfill_once(folder, src, batch)
        assert result.copied == rows, result
        emit("backfill_sql_to_memory", "rows_per_second", rows / elapsed, rows / raw, "rows/s")
        await src.close()
        # Peak heap beyond what the target keeps, at rows/5 and at rows.
        peaks = []
        for count in (rows // 5, rows):
            sub = folder / f"m{count}"
            sub.mkdir()
            small = await sql_source(sub, count)
            gc.collect()
            tracemalloc.start()
            _, _, kept = await backfill_once(sub, small, batch)
            retained, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            peaks.append((peak - retained) / 1e6)
            del kept
            await small.close()
        emit("backfill_sql_to_memory", "peak_heap_beyond_retained_mb", peaks[1], peaks[0], "MB")


async def bench_emulator(rows: int) -> None:
    from multibackend_streamsource.emulator import UserSpec, run_emulator

    user = UserSpec(email="ed@example.com", password="Bench-Passw0rd", role="editor")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src = await sql_source(folder, rows)
        rates = {}
        for mode in ("bulk", "single"):
            async with run_emulator(users=[user], rate_limit=10_000_000) as emu:
                dst = load_backend(
                    "streamsource",
                    name="ss",
                    base_url=emu.base_url,
                    email=user.email,
                    password=user.password,
                    requests_per_minute=10_000_000,
                )
                await dst.open()
                store = JournalStore(f"sqlite+aiosqlite:///{folder}/j-{mode}.db")
                await store.open()
                started = time.perf_counter()
                result = await Backfill(
                    store, src, dst, batch=500, use_bulk=mode == "bulk", concurrency=32
                ).run()
                rates[mode] = rows / (time.perf_counter() - started)
                assert result.copied == rows, result
                await store.close()
                await dst.close()
        bulk, single = rates["bulk"], rates["single"]
        emit("backfill_emulator", "bulk_rows_per_second", bulk, single, "rows/s")
        emit("backfill_emulator", "single_rows_per_second", single, bulk, "rows/s")
        await src.close()


async def bench_rate_limited() -> None:
    from multibackend_streamsource.emulator import UserSpec, run_emulator

    user = UserSpec(email="ed@example.com", password="Bench-Passw0rd", role="editor")
    limit, window = 300, 3.0  # 100 requests/s allowed
    rows = 900
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src = await sql_source(folder, rows)
        async with run_emulator(users=[user], rate_limit=limit, rate_period=window) as emu:
            dst = load_backend(
                "streamsource",
                name="ss",
                base_url=emu.base_url,
                email=user.email,
                password=user.password,
                rate_limit_requests=limit,
                rate_limit_window=window,
            )
            await dst.open()
            store = JournalStore(f"sqlite+aiosqlite:///{folder}/j.db")
            await store.open()
            emu.reset_counters()
            started = time.perf_counter()
            result = await Backfill(store, src, dst, use_bulk=False, concurrency=32).run()
            elapsed = time.perf_counter() - started
            counters = emu.counters()
            assert result.copied == rows, result
            achieved = counters.requests / elapsed
            emit(
                "backfill_emulator_rate_limited",
                "requests_per_second",
                achieved,
                limit / window,
                "req/s",
            )
            emit(
                "backfill_emulator_rate_limited",
                "http_429",
                float(counters.throttled),
                0.0,
                "responses",
            )
            await store.close()
            await dst.close()
        await src.close()


async def bench_verify(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src = await sql_source(folder, rows)
        journal = f"sqlite+aiosqlite:///{folder}/journal-verify.db"
        _, _, dst = await backfill_once(folder, src, 1000, journal)
        store = JournalStore(journal)
        await store.open()
        started = time.perf_counter()
        async for _ in scan_streams(src):
            pass
        async for _ in scan_streams(dst):
            pass
        raw = time.perf_counter() - started
        started = time.perf_counter()
        result = await Verifier(store, src, dst).run()
        elapsed = time.perf_counter() - started
        assert result.clean, result
        assert result.checked == rows, result
        emit("verify_sql_memory", "entities_per_second", rows / elapsed, rows / raw, "entities/s")
        await store.close()
        await src.close()


async def bench_cutover_check(writes: int = 2000) -> None:
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for follow in (False, True):
            manager = BackendManager(
                [load_backend("memory", name="a"), load_backend("memory", name="b")],
                primary="a",
                journal_url=f"sqlite+aiosqlite:///{tmp}/j-{follow}.db",
                worker="external",
                follow_cutover=follow,
            )
            async with manager:
                made = await manager.create_stream(StreamDraft(source="s", link="https://x.test"))
                started = time.perf_counter()
                for i in range(writes):
                    await manager.update_stream(made.id, StreamPatch(title=f"t{i}"))
                rates[follow] = writes / (time.perf_counter() - started)
        # The check alone: one read of the cutover version, as each write does it.
        store = JournalStore(f"sqlite+aiosqlite:///{tmp}/j-True.db")
        await store.open()
        started = time.perf_counter()
        for _ in range(writes):
            await read_version(store)
        check_us = (time.perf_counter() - started) / writes * 1e6
        await store.close()
    emit("cutover_check", "writes_per_second", rates[True], rates[False], "writes/s")
    emit("cutover_check", "version_read_us", check_us, 1e6 / rates[False], "us")
    emit(
        "cutover_check",
        "check_cost_per_write_us",
        (1 / rates[True] - 1 / rates[False]) * 1e6,
        1e6 / rates[False],
        "us",
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--emulator-rows", type=int, default=5_000)
    parser.add_argument(
        "--only",
        choices=("backfill", "verify", "emulator", "rate-limited", "cutover"),
        action="append",
        help="run only these figures (repeatable; default: all)",
    )
    args = parser.parse_args()
    only = set(args.only or ())

    def wanted(name: str) -> bool:
        return not only or name in only

    if wanted("backfill"):
        await bench_backfill_sql_memory(args.rows)
    if wanted("verify"):
        await bench_verify(args.rows)
    if wanted("emulator"):
        await bench_emulator(args.emulator_rows)
    if wanted("rate-limited"):
        await bench_rate_limited()
    if wanted("cutover"):
        await bench_cutover_check()


if __name__ == "__main__":
    asyncio.run(main())
