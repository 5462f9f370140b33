"""The journal's SQLite files are private to their owner (issue 8, security)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from multibackend.manager import BackendManager
from multibackend.model import StreamDraft

from .conftest import memory


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A permissive umask, as many hosts have: files would be created world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_journal_file_and_its_wal_files_are_owner_only(
    tmp_path: Path, open_umask: None
) -> None:
    journal = tmp_path / "journal.db"
    manager = BackendManager(
        [memory("primary"), memory("s1")],
        primary="primary",
        journal_url=f"sqlite:///{journal}",
        worker="external",
    )
    async with manager:
        await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        files = sorted(tmp_path.glob("journal.db*"))  # noqa: ASYNC240 (a test's listing)
        assert {p.name for p in files} >= {"journal.db", "journal.db-wal", "journal.db-shm"}
        for path in files:
            assert mode(path) == 0o600, path.name


async def test_an_existing_journal_file_keeps_its_mode(tmp_path: Path, open_umask: None) -> None:
    journal = tmp_path / "journal.db"
    journal.touch(mode=0o640)
    manager = BackendManager(
        [memory("primary"), memory("s1")],
        primary="primary",
        journal_url=f"sqlite:///{journal}",
        worker="external",
    )
    async with manager:
        pass
    assert mode(journal) == 0o640  # the operator chose it; we do not change it
