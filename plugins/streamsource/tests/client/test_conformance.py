"""The StreamBackend conformance suite against the emulator over real HTTP: a fresh emulator
per test, the backend logged in as its editor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from multibackend_streamsource.backend import StreamSourceBackend

from multibackend.backend import StreamBackend
from multibackend.model import StreamId
from multibackend.testing.conformance import BackendConformance


class TestStreamSourceConformance(BackendConformance):
    # Streams carry the nested owner; user_id filters by it; posted_by defaults to its email.
    knows_owner: ClassVar[bool] = True
    # The server answers an unknown user id with 404; this backend turns it into an empty page.
    other_user_id: ClassVar[StreamId | None] = 999_999
    # The server stamps in milliseconds.
    timestamp_resolution: ClassVar[float] = 0.005

    @pytest.fixture
    async def backend(self, emulator: Any, make_options: Any) -> AsyncIterator[StreamBackend]:
        async with StreamSourceBackend("conformance", make_options(emulator.base_url)) as b:
            yield b
