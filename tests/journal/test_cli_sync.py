"""``multibackend sync`` and ``multibackend journal`` on a real configuration."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from multibackend.cli import main


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "multibackend.toml"
    config.write_text(
        """
[backends.legacy]
plugin = "sql"
url = "sqlite:///legacy.db"
schema = "streamsource-legacy"
create_schema = true

[backends.copy]
plugin = "sql"
url = "sqlite:///copy.db"
create_schema = true

[manager]
primary = "legacy"
secondaries = ["copy"]
worker = "external"

[journal]
url = "sqlite+aiosqlite:///legacy.db"
"""
    )
    return config


def cli(config: Path, *args: str) -> Any:
    result = CliRunner().invoke(main, [args[0], "-c", str(config), *args[1:]])
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in args else result.output


def test_sync_and_journal_commands(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    for name in ("a", "b"):
        cli(config, "streams", "create", "--source", name, "--link", f"https://x.com/{name}")
    status = cli(config, "sync", "status", "--json")
    assert status["targets"][0]["target"] == "copy"
    assert status["targets"][0]["pending"] == 2

    once = cli(config, "sync", "once", "--json")
    assert (once["applied"], once["outstanding"]) == (2, 0)
    copies = cli(config, "streams", "list", "--json")  # through the manager: the primary
    assert {s["source"] for s in copies["items"]} == {"a", "b"}
    direct = CliRunner().invoke(
        main, ["streams", "-c", str(config), "--backend", "copy", "list", "--json"]
    )
    assert {s["source"] for s in json.loads(direct.output)["items"]} == {"a", "b"}

    # A legacy row today's rules refuse (no source): its fan-out is parked with the reason.
    with sqlite3.connect(tmp_path / "legacy.db") as db:
        cur = db.execute(
            'INSERT INTO "Streams" (link, status, "createdAt", "updatedAt") '
            "VALUES ('https://x.com/old', 'Live', '2020-01-01', '2020-01-01')"
        )
        legacy_id = str(cur.lastrowid)
    cli(config, "streams", "update", legacy_id, "--title", "touched")
    once = cli(config, "sync", "once", "--json")
    assert once["parked"] == 1
    (entry,) = cli(config, "journal", "list", "--parked", "--json")["entries"]
    assert "source" in entry["last_error"]
    shown = cli(config, "journal", "show", str(entry["id"]))
    assert json.loads(shown)["snapshot"]["title"] == ["touched"]
    assert "1 entry due again" in cli(config, "journal", "retry", str(entry["id"]))
    assert cli(config, "sync", "once", "--json")["parked"] == 1  # still refused
    assert "can't be blank" in cli(config, "journal", "list", "--parked")
    assert f"dropped entry {entry['id']}" in cli(config, "journal", "drop", str(entry["id"]))
    assert "no entries" in cli(config, "journal", "list")


def test_journal_errors_are_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    for args in (
        ["journal", "show", "-c", str(config), "99"],
        ["journal", "retry", "-c", str(config)],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2
        assert "Traceback" not in result.output


def test_sync_run_stops_cleanly_on_interrupt(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cli(config, "streams", "create", "--source", "a", "--link", "https://x.com/a")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "multibackend",
            "sync",
            "-c",
            str(config),
            "run",
            "--progress",
            "0.2",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for _ in range(20):  # log lines come first
        if "draining into copy" in proc.stderr.readline():
            break
    else:
        raise AssertionError("sync run did not start")
    deadline = time.monotonic() + 30
    while cli(config, "sync", "status", "--json")["targets"][0]["pending"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped: applied 1" in err
