"""The ``multibackend`` command: plugin listing, plugin commands, streams, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import click
import pytest
from click.testing import CliRunner, Result

from multibackend import registry
from multibackend.backend import BaseBackend
from multibackend.cli import extensions as extensions_module
from multibackend.cli import main
from multibackend.cli.extensions import COMMAND_GROUP
from multibackend.model import Page, Stream, StreamDraft, StreamPatch, StreamQuery


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "multibackend.toml"
    store = tmp_path / "streams.json"
    path.write_text(f'[backends.mem]\nplugin = "memory"\npath = "{store}"\n', encoding="utf-8")
    return path


def streams(config: Path, *args: str) -> Result:
    return invoke("streams", "-c", str(config), *args)


def create(config: Path, *args: str) -> dict[str, Any]:
    result = streams(config, "create", "--json", *args)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# --- plugins ----------------------------------------------------------------------------------


def test_plugins_lists_memory_with_distribution_and_capabilities() -> None:
    result = invoke("plugins")
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith("memory "))
    assert "multibackend-memory" in line
    assert "pin" in line


def test_plugins_json() -> None:
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    memory = next(p for p in data["backends"] if p["name"] == "memory")
    assert memory["ok"] is True
    assert memory["distribution"] == "multibackend-memory"
    assert memory["version"]
    assert "pin" in memory["capabilities"]
    assert memory["error"] is None


def test_plugins_shows_a_failed_plugin_with_its_traceback_and_exits_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = registry.available_plugins()
    broken = _failed_info("kaputt", "Traceback (most recent call last):\nImportError: no module x")
    monkeypatch.setattr("multibackend.cli.plugins.available_plugins", lambda: [*real, broken])
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "FAILED backend plugin 'kaputt'" in result.stdout
    assert "ImportError: no module x" in result.stdout
    assert any(line.startswith("memory ") for line in result.stdout.splitlines())
    data = json.loads(invoke("plugins", "--json").stdout)
    failed = next(p for p in data["backends"] if p["name"] == "kaputt")
    assert failed["ok"] is False
    assert "ImportError: no module x" in failed["error"]


def _failed_info(name: str, error: str) -> registry.PluginInfo:
    ok = next(i for i in registry.available_plugins() if i.ok)
    import attrs

    return attrs.evolve(ok, name=name, backend_class=None, error=error)


# --- plugin commands --------------------------------------------------------------------------


@pytest.fixture
def plugin_commands(monkeypatch: pytest.MonkeyPatch) -> list[EntryPoint]:
    eps: list[EntryPoint] = []
    real = extensions_module.entry_points

    def fake(*, group: str) -> list[EntryPoint]:
        return eps if group == COMMAND_GROUP else list(real(group=group))

    monkeypatch.setattr(extensions_module, "entry_points", fake)
    monkeypatch.setattr(main, "_extensions", None)
    return eps


hello_command = click.Command("hello", callback=lambda: click.echo("hello from a plugin"))


def test_plugin_command_is_added(plugin_commands: list[EntryPoint]) -> None:
    plugin_commands.append(EntryPoint("hello", f"{__name__}:hello_command", COMMAND_GROUP))
    result = invoke("hello")
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello from a plugin\n"
    assert "hello" in invoke("--help").stdout


def test_broken_plugin_command_is_reported_and_the_cli_still_works(
    plugin_commands: list[EntryPoint],
) -> None:
    plugin_commands.extend(
        [
            EntryPoint("broken", "multibackend_no_such_module:cmd", COMMAND_GROUP),
            EntryPoint("notacommand", "json:dumps", COMMAND_GROUP),
            EntryPoint("streams", f"{__name__}:hello_command", COMMAND_GROUP),
            EntryPoint("hello", f"{__name__}:hello_command", COMMAND_GROUP),
        ]
    )
    result = invoke("--help")
    assert result.exit_code == 0
    assert "plugin command 'broken'" in result.stderr
    assert "ModuleNotFoundError" in result.stderr
    assert "'notacommand'" in result.stderr
    assert "not a click command" in result.stderr
    assert "clashes with the built-in command 'streams'" in result.stderr
    assert "hello" in result.stdout
    assert "Traceback" not in result.stderr  # one line each; the traceback is in `plugins`
    listing = invoke("plugins")
    assert "FAILED plugin command 'broken'" in listing.stdout
    assert "Traceback (most recent call last)" in listing.stdout


# --- streams ----------------------------------------------------------------------------------


def test_round_trip(config: Path) -> None:
    stream = create(
        config, "--source", "alice", "--link", "https://twitch.tv/alice", "--status", "live",
        "--platform", "twitch", "--city", "Austin", "--pinned",
    )  # fmt: skip
    sid = str(stream["id"])
    assert stream["status"] == "live"
    assert stream["is_pinned"] is True
    assert stream["last_live_at"] is not None

    shown = streams(config, "get", sid)
    assert shown.exit_code == 0
    lines = dict(line.split(None, 1) for line in shown.stdout.splitlines() if " " in line)
    assert lines["source"].strip() == "alice"
    assert lines["city"].strip() == "Austin"

    updated = json.loads(
        streams(config, "update", sid, "--title", "Hi", "--clear", "city", "--json").stdout
    )
    assert updated["title"] == "Hi"
    assert updated["city"] is None
    assert updated["platform"] == "twitch"

    assert json.loads(streams(config, "unpin", sid, "--json").stdout)["is_pinned"] is False
    assert json.loads(streams(config, "pin", sid, "--json").stdout)["is_pinned"] is True

    deleted = streams(config, "delete", sid)
    assert deleted.exit_code == 0
    assert deleted.stdout == f"deleted stream {sid}\n"
    gone = streams(config, "get", sid)
    assert gone.exit_code == 1
    assert gone.stdout == ""
    assert gone.stderr.startswith("multibackend: error: ")
    assert "not found" in gone.stderr.lower()
    assert len(gone.stderr.splitlines()) == 1


def test_list_filters_sort_and_pages(config: Path) -> None:
    for name, status in [
        ("bob", "live"),
        ("carol", "offline"),
        ("dave", "live"),
        ("erin", "unknown"),
    ]:
        create(
            config, "--source", name, "--link", f"https://example.com/{name}", "--status", status
        )
    live = json.loads(
        streams(config, "list", "--status", "live", "--sort", "name", "--json").stdout
    )
    assert [s["source"] for s in live["items"]] == ["bob", "dave"]
    assert live["total_count"] == 2
    not_live = json.loads(
        streams(config, "--json", "list", "--not-status", "live", "--sort", "-name").stdout
    )
    assert [s["source"] for s in not_live["items"]] == ["erin", "carol"]
    page2 = json.loads(
        streams(config, "list", "--sort", "name", "--per-page", "3", "--page", "2", "--json").stdout
    )
    assert [s["source"] for s in page2["items"]] == ["erin"]
    assert (page2["page"], page2["per_page"], page2["total_pages"], page2["total_count"]) == (
        2,
        3,
        2,
        4,
    )

    table = streams(config, "list", "--sort", "name")
    assert table.exit_code == 0
    rows = table.stdout.splitlines()
    assert rows[0].split() == [
        "ID",
        "STATUS",
        "PINNED",
        "PLATFORM",
        "SOURCE",
        "CITY",
        "TITLE",
        "LINK",
    ]
    assert [row.split()[4] for row in rows[1:5]] == ["bob", "carol", "dave", "erin"]
    # Aligned: every row's link starts in the same column as the LINK header.
    column = rows[0].index("LINK")
    assert all(row[column:].startswith("https://") for row in rows[1:5])
    assert rows[5] == "page 1 of 1 · 4 shown · 4 streams in all"


def test_pinned_filter(config: Path) -> None:
    create(config, "--source", "p", "--link", "https://e.com/p", "--pinned")
    create(config, "--source", "u", "--link", "https://e.com/u")
    pinned = json.loads(streams(config, "list", "--pinned", "--json").stdout)
    assert [s["source"] for s in pinned["items"]] == ["p"]
    unpinned = json.loads(streams(config, "list", "--unpinned", "--json").stdout)
    assert [s["source"] for s in unpinned["items"]] == ["u"]


def test_empty_string_sets_and_clear_nulls(config: Path) -> None:
    sid = str(create(config, "--source", "s", "--link", "https://e.com/s", "--city", "X")["id"])
    empty = json.loads(streams(config, "update", sid, "--city", "", "--json").stdout)
    assert empty["city"] == ""
    cleared = json.loads(streams(config, "update", sid, "--clear", "city", "--json").stdout)
    assert cleared["city"] is None


# --- errors -----------------------------------------------------------------------------------


class Recorder(BaseBackend):
    """Stands in for the configured backend and records every call."""

    instances: ClassVar[list[Recorder]] = []

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls: list[str] = []
        Recorder.instances.append(self)

    async def create_stream(self, draft: StreamDraft) -> Stream:
        self.calls.append("create_stream")
        return Stream(id=1, source=draft.source, link=draft.link)

    async def get_stream(self, id: Any) -> Stream:
        self.calls.append("get_stream")
        return Stream(id=id, source="s", link="https://e.com")

    async def update_stream(self, id: Any, patch: StreamPatch) -> Stream:
        self.calls.append("update_stream")
        return Stream(id=id, source="s", link="https://e.com")

    async def delete_stream(self, id: Any) -> None:
        self.calls.append("delete_stream")

    async def list_streams(self, query: StreamQuery) -> Page[Stream]:
        self.calls.append("list_streams")
        return Page.build([], query, 0)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> list[Recorder]:
    Recorder.instances = []
    monkeypatch.setattr(registry, "load_backend", lambda plugin, *, name=None, **o: Recorder(name))
    return Recorder.instances


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["list", "--per-page", "0"], "per_page"),
        (["list", "--per-page", "101"], "per_page"),
        (["list", "--page", "0"], "page"),
        (["list", "--status", "streaming"], "status"),
        (["create", "--source", "s", "--link", "example.com"], "link"),
        (["create", "--source", "s", "--link", "https://e.com", "--kind", "movie"], "kind"),
        (["update", "1", "--platform", "myspace"], "platform"),
    ],
)
def test_bad_input_fails_before_any_backend_call(
    config: Path, recorder: list[Recorder], args: list[str], field: str
) -> None:
    result = streams(config, *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"multibackend: error: {field}: ")
    assert len(result.stderr.splitlines()) == 1
    assert recorder == []  # no backend was even built


def test_the_recorder_sees_good_input(config: Path, recorder: list[Recorder]) -> None:
    assert streams(config, "list", "--per-page", "100").exit_code == 0
    assert [r.calls for r in recorder] == [["list_streams"]]
    assert recorder[0].name == "mem"


def test_missing_config_file(tmp_path: Path) -> None:
    result = invoke("streams", "-c", str(tmp_path / "absent.toml"), "list")
    assert result.exit_code == 2
    assert "no such configuration file" in result.stderr
    assert "Traceback" not in result.output


def test_no_config_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MULTIBACKEND_CONFIG", raising=False)
    result = invoke("streams", "list")
    assert result.exit_code == 2
    assert "pass -c CONFIG" in result.stderr


def test_config_from_environment(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIBACKEND_CONFIG", str(config))
    assert invoke("streams", "list", "--json").exit_code == 0


def test_config_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[backends.legacy]\nplugin = "sqll"\n', encoding="utf-8")
    result = invoke("streams", "-c", str(path), "list")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "multibackend: error: backends.legacy.plugin: 'sqll' is not an installed plugin"
    )
    assert len(result.stderr.splitlines()) == 1


def test_backend_choice(tmp_path: Path, recorder: list[Recorder]) -> None:
    two = '[backends.a]\nplugin = "memory"\n[backends.b]\nplugin = "memory"\n'
    path = tmp_path / "two.toml"
    path.write_text(two, encoding="utf-8")
    ambiguous = invoke("streams", "-c", str(path), "list")
    assert ambiguous.exit_code == 2
    assert "choose one with --backend" in ambiguous.stderr
    assert invoke("streams", "-c", str(path), "--backend", "b", "list").exit_code == 0
    unknown = invoke("streams", "-c", str(path), "--backend", "z", "list")
    assert unknown.exit_code == 2
    assert "'z' is not a configured backend" in unknown.stderr
    assert [r.name for r in recorder] == ["b"]
    # With a [manager], streams goes through BackendManager (dual writes; see
    # tests/journal/test_cli_sync.py), so no --backend is needed.
    path.write_text(two + '[manager]\nprimary = "b"\nsecondaries = ["a"]\n', encoding="utf-8")
    assert invoke("streams", "-c", str(path), "list").exit_code == 0


def test_update_usage_errors(config: Path, recorder: list[Recorder]) -> None:
    nothing = streams(config, "update", "1")
    assert nothing.exit_code == 2
    assert "nothing to update" in nothing.stderr
    both = streams(config, "update", "1", "--city", "X", "--clear", "city")
    assert both.exit_code == 2
    assert "--city and --clear city contradict each other" in both.stderr
    not_nullable = streams(config, "update", "1", "--clear", "source")
    assert not_nullable.exit_code == 2
    assert "'source' cannot be cleared" in not_nullable.stderr
    assert recorder == []


def test_clear_accepts_the_flag_spelling(config: Path) -> None:
    sid = str(
        create(config, "--source", "s", "--link", "https://e.com/s", "--posted-by", "me")["id"]
    )
    cleared = json.loads(streams(config, "update", sid, "--clear", "posted-by", "--json").stdout)
    assert cleared["posted_by"] is None


def test_create_requires_source_and_link(config: Path) -> None:
    result = streams(config, "create", "--source", "s")
    assert result.exit_code == 2
    assert "--link" in result.stderr


# --- real processes ---------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multibackend", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_round_trip_across_processes(config: Path) -> None:
    # A relative config path, from the config's folder, as a user would type it.
    cwd = config.parent
    made = run_cli("streams", "-c", config.name, "create", "--source", "zed",
                   "--link", "https://e.com/zed", "--json", cwd=cwd)  # fmt: skip
    assert made.returncode == 0, made.stderr
    sid = str(json.loads(made.stdout)["id"])
    got = run_cli("streams", "-c", config.name, "get", sid, "--json", cwd=cwd)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["source"] == "zed"
    missing = run_cli("streams", "-c", config.name, "get", "999999", cwd=cwd)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr


# --- real third-party plugin distributions (installed by the test_plugins fixture) ------------


def test_plugins_lists_a_broken_distribution_with_its_traceback_while_others_load(
    test_plugins: Path,
) -> None:
    result = invoke("plugins")
    assert result.exit_code == 0
    out = result.stdout
    assert any(line.startswith("example ") for line in out.splitlines())
    assert any(line.startswith("memory ") for line in out.splitlines())
    assert "FAILED backend plugin 'broken' (multibackend-broken 0.0.1" in out
    assert "Traceback (most recent call last)" in out
    assert "RuntimeError: multibackend-broken is broken on purpose" in out
    data = json.loads(invoke("plugins", "--json").stdout)
    by_name = {p["name"]: p for p in data["backends"]}
    assert by_name["example"]["ok"] is True
    assert by_name["example"]["distribution"] == "multibackend-example"
    assert by_name["example"]["version"] == "1.0.0"
    assert by_name["broken"]["ok"] is False
    assert "broken on purpose" in by_name["broken"]["error"]


def test_configuring_a_broken_plugin_is_one_clear_line(test_plugins: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[backends.x]\nplugin = "broken"\n', encoding="utf-8")
    result = invoke("streams", "-c", str(path), "list")
    assert result.exit_code == 2
    assert result.stderr.startswith("multibackend: error: backends.x.plugin: plugin 'broken'")
    assert "multibackend plugins" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_streams_through_a_third_party_plugin_with_string_ids(
    test_plugins: Path, tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[backends.ex]\nplugin = "example"\nid_prefix = "s-"\n', encoding="utf-8")
    made = json.loads(
        invoke(
            "streams", "-c", str(path), "create", "--json",
            "--source", "a", "--link", "https://e.com/a",
        ).stdout
    )  # fmt: skip
    assert made["id"] == "s-000001"
    # The example plugin keeps nothing between processes, so the next call cannot find it.
    missing = invoke("streams", "-c", str(path), "get", "s-000001")
    assert missing.exit_code == 1
    assert "no stream 's-000001'" in missing.stderr
