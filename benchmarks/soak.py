"""Soak: a sustained write load through the manager with its embedded worker.

The primary is the ``sql`` backend on a SQLite file with the legacy table and the journal in the
same file (transactional outbox); the secondaries are two ``sql`` backends on their own files.
Writers create, update, pin and delete streams at ``--rate`` writes/s (0: as fast as they can)
for ``--duration`` seconds, keeping about
``--live`` streams alive (so the data, and what memory should hold, stay bounded). Every
``--sample`` seconds the journal's lag is read from ``sync_status()``; at the end the writers stop
and the time for the lag to return to zero is measured.

Prints JSON lines {"benchmark", "metric", "value", "unit", "baseline", "ratio"}:

* ``throughput`` — writes/s through the manager; baseline: the same writers flat out straight to
  the primary backend (no journal), measured first in the same run for ``--baseline-seconds``;
* ``lag.pending`` / ``lag.oldest_age`` — one line per sample (the metric carries ``t``, seconds
  since the start), and their maxima;
* ``drain`` — seconds from the last write to nothing outstanding;
* ``rss`` — resident memory at the end; baseline: after the warm-up (``--warmup`` seconds);
  ``ratio`` - 1 is the growth (goal: under 10%).

    .venv/bin/python benchmarks/soak.py [--duration 300] [--rate 100] [--writers 4] [--sample 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from multibackend.errors import NotFound
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft, StreamPatch, StreamStatus
from multibackend.registry import load_backend


def emit(metric: str, value: float, unit: str, baseline: float | None, **extra: Any) -> None:
    line = {
        "benchmark": "soak",
        "metric": metric,
        "value": round(value, 3),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 3),
        "ratio": round(value / baseline, 3) if baseline else None,
    }
    line.update(extra)
    print(json.dumps(line), flush=True)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sql(name: str, work: Path, **options: Any) -> Any:
    return load_backend(
        "sql", name=name, url=f"sqlite:///{work}/{name}.db", create_schema=True, **options
    )


class Load:
    """Writers sharing a pool of live ids: creates until ``live`` exist, then a steady mix."""

    def __init__(self, target: Any, live: int, seed: int) -> None:
        self.target = target
        self.live_goal = live
        self.ids: list[Any] = []
        self.rng = random.Random(seed)
        self.writes = 0
        self.races = 0
        self.n = 0

    async def one(self) -> None:
        rng = self.rng
        if len(self.ids) < self.live_goal or rng.random() < 0.25:
            self.n += 1
            s = await self.target.create_stream(
                StreamDraft(source=f"s{self.n}", link=f"https://twitch.tv/s{self.n}", title="t")
            )
            self.ids.append(s.id)
        else:
            i = rng.randrange(len(self.ids))
            sid = self.ids[i]
            roll = rng.random()
            if roll < 0.33:
                # Removed from the pool first, so no other writer touches it meanwhile.
                self.ids[i] = self.ids[-1]
                self.ids.pop()
                await self.target.delete_stream(sid)
            else:
                try:
                    if roll < 0.5:
                        await self.target.set_pinned(sid, rng.random() < 0.5)
                    else:
                        await self.target.update_stream(
                            sid,
                            StreamPatch(
                                title=f"t{rng.randrange(10**6)}",
                                status=rng.choice(list(StreamStatus)),
                            ),
                        )
                except NotFound:
                    # Another writer deleted it meanwhile (as in any app): counted, not an error.
                    self.races += 1
        self.writes += 1

    async def run(self, writers: int, until: float, rate: float | None = None) -> None:
        """Write until ``until``; at most ``rate`` writes/s over all writers when given."""
        pace = 0.0 if not rate else writers / rate

        async def writer() -> None:
            while time.monotonic() < until:
                started = time.monotonic()
                await self.one()
                await asyncio.sleep(max(0.0, pace - (time.monotonic() - started)))

        await asyncio.gather(*(writer() for _ in range(writers)))


async def baseline_throughput(work: Path, args: argparse.Namespace) -> float:
    async with sql("direct", work, schema="streamsource-legacy") as primary:
        load = Load(primary, args.live, seed=1)
        start = time.monotonic()
        await load.run(args.writers, start + args.baseline_seconds)
        return load.writes / (time.monotonic() - start)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument(
        "--rate", type=float, default=100.0, help="writes/s through the manager (0: flat out)"
    )
    parser.add_argument("--live", type=int, default=2000, help="streams kept alive")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between lag samples")
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="seconds before the RSS baseline"
    )
    parser.add_argument("--baseline-seconds", type=float, default=15.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mb-soak-") as tmp:
        work = Path(tmp)
        base = await baseline_throughput(work, args)
        manager = BackendManager(
            [
                sql("legacy", work, schema="streamsource-legacy"),
                sql("copy1", work),
                sql("copy2", work),
            ],
            primary="legacy",
            journal_url=f"sqlite:///{work}/legacy.db",
        )
        async with manager:
            load = Load(manager, args.live, seed=2)
            start = time.monotonic()
            until = start + args.duration
            writes = asyncio.create_task(load.run(args.writers, until, args.rate))
            rss_base: float | None = None
            max_pending = 0
            max_age = 0.0
            while not writes.done():
                await asyncio.wait({writes}, timeout=args.sample)
                t = time.monotonic() - start
                if rss_base is None and t >= args.warmup:
                    rss_base = rss_mib()
                status = await manager.sync_status()
                pending = status.outstanding
                ages = [s.oldest_pending_age or 0.0 for s in status.targets.values()]
                age = max(ages, default=0.0)
                max_pending = max(max_pending, pending)
                max_age = max(max_age, age)
                emit("lag.pending", pending, "entries", None, t=round(t, 1))
                emit("lag.oldest_age", age, "s", None, t=round(t, 1))
                emit("rss.sample", rss_mib(), "MiB", rss_base, t=round(t, 1))
            await writes
            elapsed = time.monotonic() - start
            emit("throughput", load.writes / elapsed, "writes/s", base)
            emit("writes", load.writes, "writes", None)
            emit("races", load.races, "writes", None)
            t0 = time.monotonic()
            drained = await manager.drain(timeout=300)
            emit("drain", time.monotonic() - t0, "s", None, drained=drained)
            emit("lag.pending.max", max_pending, "entries", None)
            emit("lag.oldest_age.max", max_age, "s", None)
            final = await manager.sync_status()
            emit("parked", final.parked, "entries", None)
            emit("rss", rss_mib(), "MiB", rss_base)
        return 0 if drained and final.parked == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
