"""Entity keys: unique, uuid-shaped, and minted in time order (index locality)."""

from __future__ import annotations

import asyncio
import string
import time
from typing import Any

from multibackend.journal.keys import KEY_LENGTH, new_entity_key, new_entity_keys
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft

from .conftest import memory


def _shaped(key: str) -> bool:
    return len(key) == KEY_LENGTH and set(key) <= set(string.hexdigits.lower())


def test_keys_are_unique_and_shaped_like_the_old_uuid_keys() -> None:
    singles = [new_entity_key() for _ in range(5000)]
    batch = new_entity_keys(5000)
    assert all(_shaped(k) for k in singles + batch)
    # Many keys within one microsecond (a batch shares one time prefix): the random part
    # alone keeps them apart.
    assert len(set(singles) | set(batch)) == 10000
    assert len({k[:14] for k in batch}) == 1
    assert new_entity_keys(0) == []


def test_keys_minted_later_sort_after_earlier_ones() -> None:
    first = new_entity_keys(50)
    time.sleep(0.002)
    middle = new_entity_key()
    time.sleep(0.002)
    last = new_entity_keys(50)
    assert max(first) < middle < min(last)


async def test_manager_creates_get_time_ordered_keys(tmp_path: Any) -> None:
    manager = BackendManager(
        [memory("primary"), memory("s1")],
        primary="primary",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/journal.db",
    )
    async with manager:
        ids = []
        for i in range(5):
            created = await manager.create_stream(
                StreamDraft(source=f"s{i}", link=f"https://twitch.tv/s{i}")
            )
            ids.append(created.id)
            await asyncio.sleep(0.001)
        assert await manager.drain(timeout=10)
        store = manager.store
        assert store is not None
        keys = [str(await store.entity_key_of("stream", "primary", i)) for i in ids]
        assert all(_shaped(k) for k in keys)
        assert keys == sorted(keys)
        # The secondary's copies belong to the same entities.
        for key, primary_id in zip(keys, ids, strict=True):
            copy = await manager.translate_id(primary_id, "primary", "s1")
            assert copy is not None
            assert await store.entity_key_of("stream", "s1", copy) == key
