"""``multibackend demo``: a real round trip through the CLI, as a new user would make it.

Until the full cutover demo exists, the demo lists the installed plugins, writes a configuration
with one memory backend persisted to a JSON file, and drives ``multibackend streams`` as separate
processes (so every step also proves the data survived a process exit). Each command is printed
with its output; any unexpected result stops the demo with exit status 1.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import click

__all__ = ["DemoFailed", "demo", "run_demo"]


class DemoFailed(Exception):
    """A demo step returned something other than what it should."""


@attrs.frozen
class _Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def _config_text(store: Path) -> str:
    # json.dumps gives a valid TOML basic string for any file name.
    return (
        "# Written by `multibackend demo`: one in-memory backend, saved to a JSON file\n"
        "# (a relative path resolves against this file's folder).\n"
        "[backends.demo]\n"
        'plugin = "memory"\n'
        f"path = {json.dumps(store.name)}\n"
    )


class _Runner:
    def __init__(self, workdir: Path, echo: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.echo = echo
        self.step = 0

    def __call__(self, *args: str, expect_code: int = 0) -> _Result:
        self.step += 1
        self.echo(f"\n[{self.step}] $ multibackend {shlex.join(args)}")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("MULTIBACKEND_CONFIG", None)
        proc = subprocess.run(
            [sys.executable, "-m", "multibackend", *args],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for line in (proc.stdout + proc.stderr).rstrip().splitlines():
            self.echo(f"    {line}")
        if proc.returncode != expect_code:
            raise DemoFailed(
                f"step {self.step} exited with {proc.returncode}, expected {expect_code}"
            )
        return _Result(proc.returncode, proc.stdout, proc.stderr)


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(what)


def run_demo(workdir: Path, echo: Callable[[str], None] = click.echo) -> None:
    """Run every step in ``workdir``; raise DemoFailed at the first unexpected result."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "streams.json"
    store.unlink(missing_ok=True)
    config = workdir / "multibackend.toml"
    config.write_text(_config_text(store), encoding="utf-8")
    echo(f"multibackend demo in {workdir}")
    echo(f"\n{config.name}:")
    for line in config.read_text(encoding="utf-8").splitlines():
        echo(f"    {line}")

    run = _Runner(workdir, echo)
    c = ("-c", config.name)

    listing = run("plugins")
    _check("memory" in listing.stdout, "the memory plugin is not listed")

    created = run(
        "streams", *c, "create", "--source", "demo_streamer",
        "--link", "https://www.twitch.tv/demo_streamer", "--platform", "twitch",
        "--status", "live", "--city", "Portland", "--json",
    )  # fmt: skip
    stream = created.json()
    sid = str(stream["id"])
    _check(stream["status"] == "live", "create: status is not live")
    _check(stream["last_live_at"] is not None, "create: going live did not set last_live_at")
    _check(stream["kind"] == "video", "create: kind did not default to video")

    shown = run("streams", *c, "get", sid)
    _check("demo_streamer" in shown.stdout, "get: the stream's source is not shown")

    updated = run(
        "streams", *c, "update", sid, "--title", "Evening ride", "--clear", "city", "--json"
    ).json()
    _check(updated["title"] == "Evening ride", "update: the title did not change")
    _check(updated["city"] is None, "update: --clear city did not clear the city")
    _check(updated["source"] == "demo_streamer", "update: an untouched field changed")

    run(
        "streams", *c, "create", "--source", "second_streamer",
        "--link", "https://www.youtube.com/@second", "--status", "offline",
    )  # fmt: skip

    pinned = run("streams", *c, "pin", sid, "--json").json()
    _check(pinned["is_pinned"] is True, "pin: the stream is not pinned")

    table = run("streams", *c, "list")
    _check(
        "demo_streamer" in table.stdout and "second_streamer" in table.stdout,
        "list: not every stream is listed",
    )
    live = run("streams", *c, "list", "--status", "live", "--json").json()
    _check(live["total_count"] == 1, "list --status live: expected exactly one stream")
    _check(str(live["items"][0]["id"]) == sid, "list --status live: wrong stream")

    refused = run("streams", *c, "list", "--per-page", "0", expect_code=2)
    _check("per_page" in refused.stderr, "a bad --per-page was not refused by name")

    run("streams", *c, "delete", sid)
    gone = run("streams", *c, "get", sid, expect_code=1)
    _check("not found" in gone.stderr.lower(), "get after delete: expected 'not found'")

    remaining = run("streams", *c, "list").stdout
    _check(
        "second_streamer" in remaining and "demo_streamer" not in remaining,
        "list after delete: the deleted stream is still listed",
    )
    echo(f"\ndemo passed: {run.step} commands; the streams were kept in {store}")


@click.command(short_help="Run a CLI round trip on the memory backend.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the demo's configuration and data (default: a temporary folder).",
)
def demo(workdir: Path | None) -> None:
    """Show the plugin listing and a round trip through the memory backend via the CLI."""
    try:
        if workdir is not None:
            run_demo(workdir.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="multibackend-demo-") as tmp:
                run_demo(Path(tmp))
            click.echo("(the temporary folder is removed; use --workdir DIR to keep it)")
    except DemoFailed as exc:
        click.echo(f"multibackend: demo failed: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
