"""The memory backend passes the conformance suite, with and without a known owner."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from multibackend.backend import StreamBackend
from multibackend.registry import load_backend
from multibackend.testing.conformance import BackendConformance


class TestMemoryConformance(BackendConformance):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[StreamBackend]:
        async with load_backend("memory", name="conformance") as backend:
            yield backend


class TestMemoryWithOwnerConformance(BackendConformance):
    knows_owner = True
    other_user_id = 999

    @pytest.fixture
    async def backend(self) -> AsyncIterator[StreamBackend]:
        async with load_backend(
            "memory", name="owned", owner_email="editor@example.test", owner_id=7
        ) as backend:
            yield backend
