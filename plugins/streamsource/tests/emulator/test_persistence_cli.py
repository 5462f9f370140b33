"""``--db`` persistence, and the command line as a real subprocess."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner
from emulator_helpers import PASSWORD
from multibackend_streamsource.emulator import EmulatorConfig, UserSpec, run_emulator
from multibackend_streamsource.emulator.cli import emulator as emulator_command
from multibackend_streamsource.emulator.config import parse_rate_limit, parse_user


async def test_db_keeps_state_between_runs(tmp_path: Path) -> None:
    db = tmp_path / "emulator.db"
    spec = UserSpec(email="ed@example.com", password=PASSWORD, role="editor")
    async with run_emulator(EmulatorConfig(users=[spec], db_path=db)) as emu:
        token = emu.token_for("ed@example.com")
        revoked = emu.token_for("ed@example.com")
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(emu.base_url, headers=headers) as http:
            body = {"source": "a", "link": "https://x.com", "status": "live"}
            async with http.post("/api/v1/streams", json=body) as resp:
                assert resp.status == 201
                first = (await resp.json())["stream"]
            async with http.delete(
                "/api/v1/logout", headers={"Authorization": f"Bearer {revoked}"}
            ) as resp:
                assert resp.status == 200
        await emu.set_flag("stream_tags", "all")
        await emu.archive_stream(first["id"])
    # A second run on the same file: same users, streams, flags, secret and denylist.
    async with run_emulator(EmulatorConfig(db_path=db)) as emu:
        assert [u.email for u in emu.users()] == ["ed@example.com"]
        assert emu.flags()["stream_tags"] == "all"
        async with aiohttp.ClientSession(emu.base_url) as http:
            async with http.get(
                f"/api/v1/streams/{first['id']}", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                assert resp.status == 200
                again = (await resp.json())["stream"]
            async with http.get(
                "/api/v1/streams", headers={"Authorization": f"Bearer {revoked}"}
            ) as resp:
                assert resp.status == 401
        same = {k: v for k, v in again.items() if k not in ("tags", "updated_at")}
        assert same == {k: v for k, v in first.items() if k != "updated_at"}  # archiving touched it
        assert again["tags"] == []
        assert emu.stream(first["id"])["is_archived"] is True  # type: ignore[index]
        second = await _create(emu.base_url, token)
        assert second["id"] == first["id"] + 1


async def _create(base_url: str, token: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base_url, headers=headers) as http:
        body = {"source": "b", "link": "https://y.com"}
        async with http.post("/api/v1/streams", json=body) as resp:
            assert resp.status == 201
            stream: dict[str, object] = (await resp.json())["stream"]
            return stream


async def test_command_serves_until_terminated() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "multibackend_streamsource.emulator",
        "--port",
        "0",
        "--user",
        "editor@example.com:Passw0rd1:editor",
        "--flag",
        "stream_tags=all",
        "--rate-limit",
        "5/60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        base_url = line.decode().strip()
        assert base_url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession(base_url) as http:
            login = {"user": {"email": "editor@example.com", "password": "Passw0rd1"}}
            async with http.post("/api/v1/login", json=login) as resp:
                assert resp.status == 200
                token = (await resp.json())["token"]
            headers = {"Authorization": f"Bearer {token}"}
            body = {"source": "alice", "link": "https://twitch.tv/alice", "status": "live"}
            async with http.post("/api/v1/streams", json=body, headers=headers) as resp:
                assert resp.status == 201
                created = (await resp.json())["stream"]
            assert created["tags"] == []
            async with http.get("/api/v1/streams", headers=headers) as resp:
                assert resp.status == 200
                listed = await resp.json()
            assert listed["streams"] == [created]
            statuses = []
            for _ in range(3):
                async with http.get("/health/live") as resp:
                    statuses.append(resp.status)
                    limit = resp.headers.get("X-RateLimit-Limit")
            assert statuses == [200, 200, 429]
            assert limit == "5"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=20)
    assert code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody"], "expected EMAIL:PASSWORD:ROLE"),
        (["--user", "a@b.c:pw:root"], "unknown role 'root'"),
        (["--flag", "stream_tagz=all"], "unknown feature flag"),
        (["--flag", "stream_tags=friends"], "unknown flag group"),
        (["--flag", "stream_tags"], "expected NAME="),
        (["--rate-limit", "ten"], "expected N or N/SECONDS"),
        (["--rate-limit", "10/0"], "SECONDS > 0"),
        (["--error-rate", "2"], "--error-rate"),
    ],
)
def test_command_refuses_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(emulator_command, args)
    assert result.exit_code == 2
    assert message in result.output


def test_option_parsers() -> None:
    assert parse_user("a@b.c:pa:ss:admin") == UserSpec(
        email="a@b.c", password="pa:ss", role="admin"
    )
    assert parse_user("a@b.c:pw:editor:service").service_account is True
    assert parse_rate_limit("10") == (10, 60.0)
    assert parse_rate_limit("3/1.5") == (3, 1.5)
