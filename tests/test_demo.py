"""``multibackend demo``: the whole cutover on a small legacy database, and its exit status."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from multibackend.cli import main
from multibackend.demo import Check, DemoOptions, DemoReport, run_demo
from multibackend.demo.config import EXAMPLE_URL, render_config
from multibackend.demo.report import render_summary
from multibackend.demo.seed import seed_legacy

ROOT = Path(__file__).parent.parent


async def test_the_demo_runs_a_whole_cutover_and_every_check_passes(tmp_path: Path) -> None:
    out = io.StringIO()
    workdir = tmp_path / "work"
    report = await run_demo(DemoOptions(workdir=workdir, streams=300, shadow_reads=250), out)
    text = out.getvalue()
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.ok]
    assert report.passed, failed

    saved = json.loads((workdir / "report.json").read_text())
    assert saved["passed"] is True
    names = {c["name"] for c in saved["checks"]}
    assert {
        "verify clean",
        "final verify legacy -> StreamSource",
        "final verify StreamSource -> legacy",
        "counts agree",
        "lag zero",
        "nothing parked",
        "rollback to legacy",
        "flip again",
        "multibackend cutover status",
    } <= names
    assert all(c["ok"] for c in saved["checks"])
    results = saved["results"]
    # Both backends hold what the app should see: the seeded streams plus its creates minus its
    # deletes — and the app really wrote, against both primaries.
    streams = results["streams"]
    assert streams["legacy"] == streams["streamsource"] == streams["expected"]
    assert results["writes"]["deletes"] > 0
    assert results["writes"]["creates"] > 0
    assert results["writes"]["primaries"] == ["legacy", "streamsource"]
    assert results["backfill"]["copied"] > 0
    # Faults were injected and survived.
    assert results["emulator"]["faults"] > 0
    assert results["cutover"]["phase"] == "flipped"
    assert results["cutover"]["primary"] == "streamsource"
    assert [p["name"] for p in saved["phases"]] == [
        "seed", "emulator", "dual-write", "backfill", "verify", "shadow", "flip", "rollback",
        "final", "cli",
    ]  # fmt: skip

    # What is left for inspection: the databases, the configuration, the report.
    for name in ("legacy.db", "streamsource.json", "multibackend.toml", "report.json"):
        assert (workdir / name).exists(), name
    copied = json.loads((workdir / "streamsource.json").read_text())
    assert len(copied) == streams["streamsource"]
    assert "Summary" in text
    assert "Time per phase" in text
    assert f"demo passed: {len(report.checks)}/{len(report.checks)} checks" in text


def _report(*checks: Check) -> DemoReport:
    return DemoReport(
        workdir="w", streams_seeded=1, config="c", results={}, machine={}, checks=checks
    )


def test_the_summary_names_every_failed_check() -> None:
    report = _report(
        Check(name="verify clean", ok=False, detail="missing 3"),
        Check(name="lag zero", ok=True, detail="0 outstanding"),
    )
    text = render_summary(report)
    assert "demo FAILED: 1 of 2 checks failed" in text
    assert "  - verify clean: missing 3" in text
    assert "lag zero:" not in text.split("demo FAILED")[1]


def test_the_command_exits_1_when_a_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(options: DemoOptions) -> DemoReport:
        assert options.streams == 50
        assert options.workdir == tmp_path
        return _report(Check(name="counts agree", ok=False, detail="legacy 5, StreamSource 4"))

    monkeypatch.setattr("multibackend.cli.demo.run_demo", failing)
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path), "--streams", "50"])
    assert result.exit_code == 1

    async def passing(options: DemoOptions) -> DemoReport:
        return _report(Check(name="counts agree", ok=True, detail="5 = 5"))

    monkeypatch.setattr("multibackend.cli.demo.run_demo", passing)
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output


def test_the_seeded_legacy_table_looks_like_years_of_use(tmp_path: Path) -> None:
    import sqlite3

    seeded = seed_legacy(tmp_path / "legacy.db", 2000)
    db = sqlite3.connect(tmp_path / "legacy.db")
    platforms = {r[0] for r in db.execute('SELECT DISTINCT platform FROM "Streams"')}
    statuses = {r[0] for r in db.execute('SELECT DISTINCT status FROM "Streams"')}
    months = {r[0] for r in db.execute('SELECT DISTINCT substr("createdAt", 1, 7) FROM "Streams"')}
    db.close()
    assert {"Twitch", "twitch", "YouTube", "Youtube", "Kick", None} <= platforms
    assert statuses == {"Live", "Offline", "Unknown"}
    assert len(months) >= 9
    assert seeded.rows == 2000
    assert 0 < seeded.expired < 100
    assert seeded.pinned > 0
    assert seeded.null_pinned > 0
    # The same seed writes the same rows.
    again = seed_legacy(tmp_path / "again.db", 2000)
    assert (again.expired, again.pinned, again.null_pinned) == (
        seeded.expired,
        seeded.pinned,
        seeded.null_pinned,
    )


def test_config_demo_toml_is_the_demos_configuration() -> None:
    assert (ROOT / "config" / "demo.toml").read_text(encoding="utf-8") == render_config(EXAMPLE_URL)
