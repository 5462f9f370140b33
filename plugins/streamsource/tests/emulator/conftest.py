"""Fixtures for the emulator's tests: one emulator per test, real HTTP on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from emulator_helpers import SECRET, Api, users
from multibackend_streamsource.emulator import (
    Emulator,
    EmulatorConfig,
    run_emulator,
)


@pytest.fixture
def config() -> EmulatorConfig:
    return EmulatorConfig(users=users(), secret=SECRET)


@pytest.fixture
async def emu(config: EmulatorConfig) -> AsyncIterator[Emulator]:
    async with run_emulator(config) as emulator:
        yield emulator


@pytest.fixture
async def api(emu: Emulator) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(emu.base_url) as http:
        yield Api(emu, http)
    assert emu.counters().errors == 0, "the emulator raised an unexpected exception"
