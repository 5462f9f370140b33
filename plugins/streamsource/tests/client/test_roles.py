"""Roles and ownership, end to end through the client (issue 8, security): the emulator refuses
a non-owner editor and a default user, the client turns that into PermissionDenied (never
retried), nothing changes on the server, and the journal parks such a write at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from multibackend_streamsource.emulator import UserSpec, run_emulator

from multibackend.errors import PermissionDenied
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft, StreamPatch
from multibackend.registry import load_backend

OWNER = UserSpec(email="owner@example.com", password="Owner-Passw0rd", role="editor")
OTHER = UserSpec(email="other@example.com", password="Other-Passw0rd", role="editor")
DEFAULT = UserSpec(email="viewer@example.com", password="Viewer-Passw0rd", role="default")
ADMIN = UserSpec(email="admin@example.com", password="Admin-Passw0rd", role="admin")


def as_user(url: str, user: UserSpec, name: str = "ss") -> Any:
    return load_backend(
        "streamsource", name=name, base_url=url, email=user.email, password=user.password
    )


async def test_non_owner_and_default_user_are_refused_and_change_nothing() -> None:
    async with run_emulator(users=[OWNER, OTHER, DEFAULT, ADMIN]) as emu:
        async with as_user(emu.base_url, OWNER) as owner:
            mine = await owner.create_stream(
                StreamDraft(source="alice", link="https://twitch.tv/alice", title="original")
            )
        refused = []
        for user in (OTHER, DEFAULT):
            async with as_user(emu.base_url, user) as backend:
                attempts = [
                    lambda b=backend: b.update_stream(mine.id, StreamPatch(title="taken")),
                    lambda b=backend: b.set_pinned(mine.id, True),
                    lambda b=backend: b.delete_stream(mine.id),
                ]
                if user is DEFAULT:
                    attempts.append(
                        lambda b=backend: b.create_stream(
                            StreamDraft(source="v", link="https://twitch.tv/v")
                        )
                    )
                for attempt in attempts:
                    with pytest.raises(PermissionDenied) as info:
                        await attempt()
                    assert info.value.retryable is False
                    refused.append(info.value)
                # Reading is allowed to every signed-in user.
                assert (await backend.get_stream(mine.id)).title == "original"
        assert len(refused) == 7
        stored = emu.stream(mine.id)
        assert (stored["title"], stored["is_pinned"]) == ("original", False)
        assert len(emu.streams()) == 1
        # An admin may change anyone's stream.
        async with as_user(emu.base_url, ADMIN) as admin:
            assert (await admin.update_stream(mine.id, StreamPatch(title="fixed"))).title == "fixed"


async def test_a_secondary_signed_in_as_a_default_user_parks_without_retrying(
    tmp_path: Path,
) -> None:
    async with run_emulator(users=[DEFAULT]) as emu:
        manager = BackendManager(
            [load_backend("memory", name="primary"), as_user(emu.base_url, DEFAULT, "remote")],
            primary="primary",
            journal_url=f"sqlite:///{tmp_path}/journal.db",
            worker="external",
        )
        async with manager:
            await manager.create_stream(StreamDraft(source="a", link="https://twitch.tv/a"))
            assert manager.worker is not None
            await manager.worker.run_once()
            assert manager.store is not None
            (row,) = await manager.store.rows(status="parked")
            assert row.attempts == 1
            assert "PermissionDenied" in (row.last_error or "")
        assert emu.streams() == []
