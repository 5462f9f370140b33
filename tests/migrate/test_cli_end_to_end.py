"""The kit end to end on the legacy schema preset into the emulator, through the real command:
a backfill killed with SIGKILL and resumed, verify and repair, cutover status and dry runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from multibackend.cli import main

from .conftest import EDITOR, PASSWORD, history, legacy


def _config(tmp_path: Path, base_url: str, extra: str = "") -> Path:
    path = tmp_path / "multibackend.toml"
    path.write_text(
        f"""
[backends.legacy]
plugin = "sql"
url = "sqlite+aiosqlite:///legacy.db"
schema = "streamsource-legacy"
create_schema = true

[backends.ss]
plugin = "streamsource"
base_url = "{base_url}"
email = "{EDITOR}"
password = "{PASSWORD}"
requests_per_minute = 1000000

[manager]
primary = "legacy"
secondaries = ["ss"]

[journal]
url = "sqlite+aiosqlite:///journal.db"
{extra}
""",
        encoding="utf-8",
    )
    return path


def _checkpoint(journal: Path) -> dict[str, Any] | None:
    if not journal.exists():
        return None
    try:
        with sqlite3.connect(journal, timeout=5) as db:
            row = db.execute(
                "SELECT value FROM mb_meta WHERE key = 'backfill:legacy->ss'"
            ).fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else dict(json.loads(row[0]))


async def _command(*args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "multibackend",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def test_backfill_killed_with_sigkill_resumes_without_duplicates_or_gaps(
    tmp_path: Path, emulator: Any
) -> None:
    async with legacy(tmp_path / "legacy.db") as src:
        await src.bulk_import(history(1200))
    config = _config(tmp_path, emulator.base_url)
    # Slow answers, so the kill lands mid-run.
    emulator.set_faults(latency=0.03)
    proc = await _command(
        "backfill", "-c", str(config), "--from", "legacy", "--to", "ss", "--batch", "100"
    )
    for _ in range(1000):
        point = _checkpoint(tmp_path / "journal.db")
        if point is not None and point.get("last_id") is not None:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the backfill never checkpointed")
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _checkpoint(tmp_path / "journal.db")
    assert killed_at is not None
    assert not killed_at["done"]
    partial = len(emulator.streams())
    assert partial < 1200

    emulator.clear_faults()
    resumed = await _command(
        "backfill", "-c", str(config), "--from", "legacy", "--to", "ss", "--resume", "--json"
    )
    out, err = await resumed.communicate()
    assert resumed.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["resumed"] is True
    # Resumed after the checkpoint: the streams before it were not read again.
    assert summary["scanned"] < 1200
    streams = emulator.streams()
    assert len(streams) == 1200, (summary, _rows(tmp_path / "journal.db"))
    links = Counter((s["link"], s["title"]) for s in streams)
    # history() holds a handful of true duplicates; nothing else appears twice.
    assert sum(links.values()) - len(links) == sum(1 for i in range(1200) if i % 97 == 0) - 1

    check = await _command("verify", "-c", str(config), "--between", "legacy", "ss", "--json")
    out, err = await check.communicate()
    assert check.returncode == 0, (out.decode()[:2000], err.decode())
    assert json.loads(out)["clean"] is True


def test_cutover_status_and_dry_runs_say_what_is_missing(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9", "[cutover]\nfence_timeout = 5\n")
    runner = CliRunner()
    status = runner.invoke(main, ["cutover", "-c", str(config), "status"])
    assert status.exit_code == 0, status.output
    assert "phase: legacy-only" in status.output
    assert "next: dual-write" in status.output
    dry = runner.invoke(main, ["cutover", "-c", str(config), "advance", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "set the phase to dual-write" in dry.output
    again = runner.invoke(main, ["cutover", "-c", str(config), "status", "--json"])
    assert json.loads(again.output)["phase"] == "legacy-only"  # the dry run changed nothing
    step = runner.invoke(main, ["cutover", "-c", str(config), "advance"])
    assert step.exit_code == 0, step.output
    blocked = runner.invoke(main, ["cutover", "-c", str(config), "advance"])
    assert blocked.exit_code == 1
    assert "no completed backfill legacy -> ss" in blocked.output
    back = runner.invoke(main, ["cutover", "-c", str(config), "rollback", "--json"])
    assert json.loads(back.output)["to"] == "legacy-only"


def _rows(journal: Path) -> Any:
    with sqlite3.connect(journal) as db:
        return db.execute("SELECT entity_key, status, seq, last_error FROM mb_queue").fetchall()
