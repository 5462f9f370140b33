"""The StreamBackend conformance suite against the emulator over real HTTP: a fresh emulator
per test, the backend logged in as its editor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from multibackend_streamsource.backend import StreamSourceBackend

from multibackend.backend import StreamBackend
from multibackend.model import StreamDraft, StreamId, StreamPatch
from multibackend.testing.conformance import FULL_VALUES, NULLABLE_FIELDS, BackendConformance


class TestStreamSourceConformance(BackendConformance):
    # Streams carry the nested owner; user_id filters by it; posted_by defaults to its email.
    knows_owner: ClassVar[bool] = True
    # The server answers an unknown user id with 404; this backend turns it into an empty page.
    other_user_id: ClassVar[StreamId | None] = 999_999
    # The server stamps in milliseconds.
    timestamp_resolution: ClassVar[float] = 0.005

    async def test_update_with_none_clears_nullable_fields(self, backend: StreamBackend) -> None:
        """As the suite's, except for ``posted_by``: the server sets a blank ``posted_by`` to
        the owner's email on every save (contract §2), so clearing it gives the owner's email.
        (The suite documents that default under ``knows_owner`` but does not apply it here.)"""
        nullable = [f for f in NULLABLE_FIELDS if f != "posted_by"]
        created = await backend.create_stream(StreamDraft(**FULL_VALUES))
        cleared = dict.fromkeys([*nullable, "posted_by"], None)
        updated = await backend.update_stream(created.id, StreamPatch(**cleared))
        assert {name: getattr(updated, name) for name in nullable} == dict.fromkeys(nullable)
        assert updated.user is not None
        assert updated.posted_by == updated.user.email
        assert await backend.get_stream(created.id) == updated

    @pytest.fixture
    async def backend(self, emulator: Any, make_options: Any) -> AsyncIterator[StreamBackend]:
        async with StreamSourceBackend("conformance", make_options(emulator.base_url)) as b:
            yield b
