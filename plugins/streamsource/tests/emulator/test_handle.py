"""The in-process handle: lifecycle, isolation, start-up settings."""

from __future__ import annotations

import aiohttp
import pytest
from emulator_helpers import PASSWORD
from multibackend_streamsource.emulator import Emulator, EmulatorConfig, UserSpec, run_emulator


async def test_controls_need_a_started_emulator() -> None:
    emu = Emulator()
    with pytest.raises(RuntimeError, match="not started"):
        emu.counters()
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.base_url


async def test_counters_survive_stop_and_emulators_are_isolated() -> None:
    config = EmulatorConfig(
        users=[UserSpec(email="a@example.com", password=PASSWORD, role="admin")],
        flags={"stream_tags": "all", "maintenance_mode": "on"},
    )
    async with Emulator(config) as first, run_emulator() as second:
        assert first.port != second.port
        assert first.flags()["stream_tags"] == "all"
        assert second.flags()["stream_tags"] == "admins"
        assert second.users() == []
        async with aiohttp.ClientSession(first.base_url) as http:
            headers = {"Authorization": f"Bearer {first.token_for('a@example.com')}"}
            async with http.get("/api/v1/streams", headers=headers) as resp:
                assert resp.status == 503  # maintenance on from the start
    assert first.counters().statuses == {503: 1}
    assert second.counters().requests == 0


async def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        async with run_emulator(secret="short"):
            pass


async def test_unknown_start_flag_is_refused_and_nothing_keeps_running() -> None:
    emu = Emulator(EmulatorConfig(flags={"nope": "all"}))
    with pytest.raises(ValueError, match="unknown feature flag"):
        await emu.start()
    with pytest.raises(RuntimeError):
        _ = emu.base_url
