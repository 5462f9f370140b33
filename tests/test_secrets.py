"""Secrets never leak (issue 8, security): a planted password and token, used for real logins and
requests through the manager, the journal and the CLI, with failures on the way, appear in no log
line (DEBUG, every logger), repr, exception text or traceback, journal row or journal file, and in
no CLI output."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from multibackend_streamsource.emulator import UserSpec, run_emulator

from multibackend.errors import MultibackendError
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft, StreamPatch
from multibackend.registry import load_backend

PASSWORD = "Planted-Pa55word-7f3a9c"
WRONG_PASSWORD = "Planted-Wr0ng-Pa55-b81e"
EDITOR = UserSpec(email="editor@example.com", password=PASSWORD, role="editor")
SERVICE = UserSpec(
    email="svc@example.com", password="Svc-Pa55word-1d2e", role="editor", service_account=True
)

CONFIG = """
[backends.legacy]
plugin = "sql"
url = "sqlite:///{work}/legacy.db"
schema = "streamsource-legacy"
create_schema = true

[backends.remote]
plugin = "streamsource"
base_url = "{url}"
email = "editor@example.com"
password = "${{MB_TEST_PASSWORD}}"
max_retries = 0

[backends.service]
plugin = "streamsource"
base_url = "{url}"
token = "${{MB_TEST_TOKEN}}"
max_retries = 0

[backends.wrong]
plugin = "streamsource"
base_url = "{url}"
email = "editor@example.com"
password = "${{MB_TEST_WRONG}}"
max_retries = 0

[manager]
primary = "legacy"
secondaries = ["remote", "service"]
worker = "external"

[journal]
url = "sqlite:///{work}/journal.db"

[sync]
max_attempts = 2
backoff_base = 0.01
backoff_cap = 0.02
"""


class _Everything(logging.Handler):
    """Keeps every record, formatted with its traceback, from every logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.append(repr(record.args))
        self.lines.append(repr(getattr(record, "__dict__", {})))


@pytest.fixture
def all_logs() -> Iterator[_Everything]:
    root = logging.getLogger()
    handler = _Everything()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Every logger that exists, at DEBUG (some set their own level).
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def exception_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def journal_dump(path: Path) -> str:
    """Every row of every table, and the raw bytes of the database and its side files."""
    parts = []
    with sqlite3.connect(path) as conn:
        parts.extend(conn.iterdump())
    for side in sorted(path.parent.glob(path.name + "*")):
        parts.append(side.read_bytes().decode("latin-1"))
    return "\n".join(parts)


async def run_cli(env: dict[str, str], config: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "multibackend",
        args[0],
        "-c",
        str(config),
        *args[1:],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=config.parent,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_planted_secrets_appear_nowhere(tmp_path: Path, all_logs: _Everything) -> None:
    texts: list[str] = []
    async with run_emulator(users=[EDITOR, SERVICE]) as emu:
        token = emu.token_for(SERVICE.email)
        secrets = {"password": PASSWORD, "wrong": WRONG_PASSWORD, "token": token}
        env = dict(
            os.environ,
            MB_TEST_PASSWORD=PASSWORD,
            MB_TEST_TOKEN=token,
            MB_TEST_WRONG=WRONG_PASSWORD,
        )
        config = tmp_path / "multibackend.toml"
        config.write_text(CONFIG.format(work=tmp_path, url=emu.base_url))
        os.environ.update(
            MB_TEST_PASSWORD=PASSWORD, MB_TEST_TOKEN=token, MB_TEST_WRONG=WRONG_PASSWORD
        )
        try:
            manager = BackendManager.from_config(config)
        finally:
            for name in ("MB_TEST_PASSWORD", "MB_TEST_TOKEN", "MB_TEST_WRONG"):
                del os.environ[name]
        texts += [repr(manager), *(repr(b) for b in manager.backends.values())]
        texts += [repr(getattr(b, "options", None)) for b in manager.backends.values()]

        async with manager:
            # Logins (password and token), writes, failures: 500s, a refused create that parks.
            ids = [
                (
                    await manager.create_stream(
                        StreamDraft(source=f"s{i}", link=f"https://twitch.tv/s{i}")
                    )
                ).id
                for i in range(4)
            ]
            emu.fail_next(2, status=500, method="POST")
            emu.fail_next(1, status=401, method="PATCH")
            assert manager.worker is not None
            await manager.worker.drain(timeout=30)
            await manager.update_stream(ids[0], StreamPatch(title="renamed"))
            emu.fail_next(4, status=422, method="PATCH", body='{"error":"nope"}')
            await manager.worker.drain(timeout=30)
            status = await manager.sync_status()
            texts.append(repr(status))
            texts.append(repr(manager.worker))
            remote = manager.backends["remote"]
            issued = await remote.auth.bearer()  # type: ignore[attr-defined]
            secrets["issued"] = issued

        # A wrong password: the login fails, the error says so without the secret.
        wrong = load_backend(
            "streamsource",
            name="wrong",
            base_url=emu.base_url,
            email=EDITOR.email,
            password=WRONG_PASSWORD,
        )
        texts.append(repr(wrong))
        async with wrong:
            with pytest.raises(MultibackendError) as info:
                await wrong.get_stream(1)
        texts += exception_texts(info.value)

        # The CLI, as an operator runs it, with the secrets in its environment.
        outputs = []
        for args in (
            ("streams", "create", "--source", "cli", "--link", "https://twitch.tv/cli"),
            ("sync", "once", "--json"),
        ):
            outputs.append((args, *await run_cli(env, config, *args)))
        reads: list[tuple[str, ...]] = [
            ("streams", "--backend", "remote", "list"),
            ("streams", "--backend", "service", "list", "--json"),
            ("streams", "--backend", "wrong", "list"),
            ("sync", "status", "--json"),
            ("journal", "list", "--json"),
            ("journal", "list", "--parked"),
        ]
        answers = await asyncio.gather(*(run_cli(env, config, *args) for args in reads))
        outputs += [(args, code, out) for args, (code, out) in zip(reads, answers, strict=True)]
        assert any(code != 0 for args, code, _ in outputs if "wrong" in args)
        assert all(code == 0 for args, code, _ in outputs if "wrong" not in args), outputs
        texts += [out for _, _, out in outputs]

    journal = journal_dump(tmp_path / "journal.db")
    assert "nope" in journal or "422" in journal or "Validation" in journal  # a parked reason
    texts.append(journal)
    texts += all_logs.lines
    assert any("DEBUG" in line for line in all_logs.lines), "expected DEBUG lines"
    for what, secret in secrets.items():
        leaks = [t[:300] for t in texts if secret in t]
        assert not leaks, f"{what} leaked: {leaks[:3]}"
