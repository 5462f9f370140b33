"""Convergence under chaos, large: 10,000 writes through the manager while the secondaries fail
(20% transient, bursts of RateLimited, latency spikes, one down for a stretch, the emulator's own
500s) and the sync worker process is SIGKILLed three times (scenario:
``multibackend/testing/chaos.py``; CI runs 1,000 operations in ``tests/chaos``).

Prints JSON lines {"benchmark", "metric", "value", "unit", "baseline", "ratio"}: the baseline is
the same scenario run calm in the same invocation (no faults, no kills), so "converge" compares
the time to drain after the last write with and without chaos. Exits 1 if the chaotic run did
not converge (any difference between backends, anything outstanding, or a parked entry that is
not an injected permanent error).

    .venv/bin/python benchmarks/chaos.py [--operations 10000] [--writers 8] [--rate 250]
                                         [--seed 1] [--no-baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from multibackend_streamsource.emulator import UserSpec, run_emulator

from multibackend.testing.chaos import POISONED, ChaosPlan, ChaosReport, run_chaos

EDITOR = UserSpec(email="chaos@example.com", password="Chaos-Passw0rd", role="editor")


def emit(metric: str, value: float, unit: str, baseline: float | None) -> None:
    print(
        json.dumps(
            {
                "benchmark": "chaos",
                "metric": metric,
                "value": round(value, 3),
                "unit": unit,
                "baseline": None if baseline is None else round(baseline, 3),
                "ratio": round(value / baseline, 2) if baseline else None,
            }
        ),
        flush=True,
    )


async def one_run(args: argparse.Namespace, *, calm: bool) -> ChaosReport:
    # Kept when the run does not converge, for inspection (the path is printed on stderr).
    work = tempfile.mkdtemp(prefix="mb-chaos-")
    async with run_emulator(users=[EDITOR], localhost_exempt=True) as emu:
        extra: dict[str, Any] = {}
        if calm:
            extra = {
                "transient_rate": 0.0,
                "rate_limited_rate": 0.0,
                "spike_rate": 0.0,
                "down_for": 0.0,
                "poison_every": 10**9,
                "kills": 0,
            }
        plan = ChaosPlan(
            work=Path(work),
            streamsource_url=emu.base_url,
            email=EDITOR.email,
            password=EDITOR.password,
            operations=args.operations,
            writers=args.writers,
            write_rate=args.rate,
            seed=args.seed,
            converge_timeout=600.0,
            **extra,
        )
        report = await run_chaos(plan, emu)
    if converged(report):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"run did not converge; its files are in {work}", file=sys.stderr)
    return report


def converged(report: ChaosReport) -> bool:
    return (
        report.outstanding == 0
        and not any(report.differences.values())
        and report.parked == {(k, POISONED) for k in report.poisoned}
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=10_000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=250.0, help="writes per second, all writers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true", help="skip the calm run")
    args = parser.parse_args()

    calm = None if args.no_baseline else await one_run(args, calm=True)
    report = await one_run(args, calm=False)

    def base(fn: Any) -> float | None:
        return None if calm is None else float(fn(calm))

    emit(
        "operations",
        sum(report.operations.values()),
        "ops",
        base(lambda r: sum(r.operations.values())),
    )
    for op, n in sorted(report.operations.items()):
        emit(f"operations.{op}", n, "ops", base(lambda r, op=op: r.operations[op]))
    emit("primary_busy_retries", report.primary_busy, "writes", base(lambda r: r.primary_busy))
    emit("write_time", report.write_seconds, "s", base(lambda r: r.write_seconds))
    emit("converge", report.converge_seconds, "s", base(lambda r: r.converge_seconds))
    faults = {k: v for k, v in report.faults.items() if v}
    emit("faults_injected", sum(faults.values()), "faults", base(lambda r: sum(r.faults.values())))
    for key, n in sorted(faults.items()):
        emit(f"faults.{key}", n, "faults", base(lambda r, key=key: r.faults[key]))
    for key in ("retries", "rate_limited", "pauses", "takeovers", "applied", "parked"):
        emit(
            f"worker.{key}",
            report.worker_stats[key],
            "count",
            base(lambda r, key=key: r.worker_stats[key]),
        )
    emit("recoveries.worker_restarts", report.kills, "count", base(lambda r: r.kills))
    emit("recoveries.lost_creates_adopted", report.adoptions, "count", base(lambda r: r.adoptions))
    emit("live_streams", report.live, "streams", base(lambda r: r.live))
    emit("parked_expected", len(report.poisoned), "entries", base(lambda r: len(r.poisoned)))
    emit("parked", len(report.parked), "entries", base(lambda r: len(r.parked)))
    emit(
        "differences",
        sum(len(d) for d in report.differences.values()),
        "differences",
        base(lambda r: sum(len(d) for d in r.differences.values())),
    )
    ok = converged(report) and (calm is None or converged(calm))
    if not ok:
        for pair, diffs in report.differences.items():
            for d in diffs[:20]:
                print(f"{pair}: {d}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
