"""The path a plugin author takes, shown working: the example plugin under tests/plugins/example/
is installed with pip as its own distribution, discovered through its entry point, and passes
the conformance suite (string ids, no ``notes`` field, only the PIN capability)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from multibackend.backend import StreamBackend
from multibackend.registry import load_backend
from multibackend.testing.conformance import BackendConformance


class TestExamplePluginConformance(BackendConformance):
    @pytest.fixture
    async def backend(self, test_plugins: Path) -> AsyncIterator[StreamBackend]:
        async with load_backend("example", name="example") as backend:
            yield backend
