"""The demo's report: phases with their time, checks, figures; as JSON and as a summary table."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Check", "DemoReport", "Phase", "render_summary"]


@attrs.frozen(kw_only=True)
class Phase:
    """One step of the demo and how long it took."""

    name: str
    seconds: float
    detail: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Check:
    """One thing the demo proves; the demo fails when any check is not ``ok``."""

    name: str
    ok: bool
    detail: str


@attrs.frozen(kw_only=True)
class DemoReport:
    """Everything ``report.json`` holds."""

    workdir: str
    streams_seeded: int
    config: str
    results: dict[str, Any]
    machine: dict[str, Any]
    phases: tuple[Phase, ...] = ()
    checks: tuple[Check, ...] = ()
    elapsed: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "elapsed": round(self.elapsed, 3),
            "workdir": self.workdir,
            "config": self.config,
            "streams_seeded": self.streams_seeded,
            "machine": self.machine,
            "phases": [
                {"name": p.name, "seconds": round(p.seconds, 3), "detail": p.detail}
                for p in self.phases
            ],
            "checks": [attrs.asdict(c) for c in self.checks],
            "results": self.results,
        }


def _table(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in rows)
    return [f"  {k.ljust(width)}  {v}" for k, v in rows]


def _get(data: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def render_summary(report: DemoReport) -> str:
    """The summary printed at the end of the demo."""
    r = report.results
    streams = r.get("streams", {})
    writes = r.get("writes", {})
    emulator = r.get("emulator", {})
    worker = r.get("worker") or {}
    journal = r.get("journal", {})
    statuses = {int(k): v for k, v in (emulator.get("statuses") or {}).items()}
    server_errors = sum(v for k, v in statuses.items() if k >= 500)
    outstanding = sum(t.get("pending", 0) + t.get("leased", 0) for t in journal.values())
    parked = sum(t.get("parked", 0) for t in journal.values())
    lags = [t.get("oldest_pending_age") for t in journal.values() if t.get("oldest_pending_age")]
    verify = _get(r, "verify", "clean")
    forward = _get(r, "final_verify", "forward", "clean")
    backward = _get(r, "final_verify", "backward", "clean")
    shadow = r.get("shadow", {})

    def yes(value: Any) -> str:
        return "clean" if value else ("DIFFERENCES" if value is not None else "not run")

    rows = [
        (
            "streams",
            f"legacy {streams.get('legacy')}, StreamSource {streams.get('streamsource')}"
            f" (expected {streams.get('expected')})",
        ),
        (
            "app writes",
            f"{writes.get('total', 0)} ({writes.get('creates', 0)} creates, "
            f"{writes.get('updates', 0)} updates, {writes.get('pins', 0)} pins, "
            f"{writes.get('deletes', 0)} deletes), {len(writes.get('errors', []))} failed",
        ),
        (
            "backfill",
            f"{_get(r, 'backfill', 'copied', default=0):,} copied, "
            f"{_get(r, 'backfill', 'retried_through_journal', default=0):,} retried through "
            f"the journal, {_get(r, 'backfill', 'already_present', default=0):,} already there, "
            f"{_get(r, 'backfill', 'rate', default=0):,.0f} streams/s",
        ),
        (
            "retries",
            f"{emulator.get('throttled', 0)} answers 429 and {server_errors} answers 5xx from "
            f"StreamSource, all retried; the app's sync worker retried {worker.get('retries', 0)}"
            f" rows, paused {worker.get('rate_limited', 0)} times for rate limits",
        ),
        ("parked", str(parked)),
        (
            "lag",
            f"{outstanding} journal rows outstanding"
            + (f", oldest {max(lags):.1f}s" if lags else ""),
        ),
        (
            "verify",
            f"after backfill {yes(verify)}; final legacy->StreamSource {yes(forward)}, "
            f"StreamSource->legacy {yes(backward)}",
        ),
        (
            "shadow reads",
            f"{shadow.get('compared', 0)} compared, {shadow.get('mismatches', 0)} mismatched "
            f"({shadow.get('mismatch_rate', 0.0):.2%})",
        ),
        (
            "cutover",
            f"phase {_get(r, 'cutover', 'phase')}, primary {_get(r, 'cutover', 'primary')}",
        ),
    ]
    lines = ["Summary", *_table(rows), "", "Time per phase"]
    lines.extend(
        _table(
            [(p.name, f"{p.seconds:6.1f}s") for p in report.phases]
            + [("total", f"{report.elapsed:6.1f}s")]
        )
    )
    lines.append("")
    passed = sum(1 for c in report.checks if c.ok)
    if report.passed:
        lines.append(f"demo passed: {passed}/{len(report.checks)} checks")
    else:
        lines.append(f"demo FAILED: {len(report.failed)} of {len(report.checks)} checks failed")
        lines.extend(f"  - {c.name}: {c.detail}" for c in report.failed)
    lines.append(f"databases, configuration and report.json are in {report.workdir}")
    return "\n".join(lines)
