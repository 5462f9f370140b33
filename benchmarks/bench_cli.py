"""CLI and configuration overhead, each against a baseline measured in the same run.

- cli_startup: wall time of ``python -m multibackend plugins`` (imports, plugin discovery)
  against a bare ``python -c pass``;
- load_config: ``load_config`` on a file with three backends and every core section (parsing,
  interpolation, plugin option checks) against ``tomllib.loads`` of the same text.

Prints one JSON line a figure: {"benchmark", "metric", "value", "unit", "baseline", "ratio"}.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from multibackend.config import load_config

CONFIG = """
[backends.a]
plugin = "memory"
path = "${MB_BENCH_PATH:-a.json}"
[backends.b]
plugin = "memory"
owner_email = "owner@example.com"
[backends.c]
plugin = "memory"
[manager]
primary = "a"
secondaries = ["b", "c"]
[journal]
url = "sqlite+aiosqlite:///journal.db"
[sync]
max_attempts = 5
"""


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def emit(benchmark: str, metric: str, value: float, baseline: float, unit: str) -> None:
    print(
        json.dumps(
            {
                "benchmark": benchmark,
                "metric": metric,
                "value": round(value, 6),
                "unit": unit,
                "baseline": round(baseline, 6),
                "ratio": round(value / baseline, 2),
            }
        )
    )


def main() -> None:
    def run(*args: str) -> None:
        subprocess.run([sys.executable, *args], check=True, capture_output=True)

    bare = median_seconds(lambda: run("-c", "pass"), 7)
    cli = median_seconds(lambda: run("-m", "multibackend", "plugins"), 7)
    emit("cli_startup", "median_wall_time", cli, bare, "s")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "multibackend.toml"
        path.write_text(CONFIG, encoding="utf-8")
        parse = median_seconds(lambda: tomllib.loads(CONFIG), 200)
        load = median_seconds(lambda: load_config(path), 200)
    emit("load_config", "median_time", load, parse, "s")


if __name__ == "__main__":
    main()
