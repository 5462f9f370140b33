"""Fixtures for the migration tools: a legacy SQL table with history, journals on SQLite and
PostgreSQL, and the StreamSource emulator over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from multibackend.model import StreamDraft
from multibackend.registry import load_backend

EDITOR = "editor@example.com"
PASSWORD = "Secret-Passw0rd"


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh journal database: a SQLite file, then a PostgreSQL database."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path}/journal.db"


def legacy(path: Path, name: str = "legacy") -> Any:
    """The legacy Node app's ``Streams`` table in a SQLite file (``streamsource-legacy``)."""
    return load_backend(
        "sql",
        name=name,
        url=f"sqlite+aiosqlite:///{path}",
        schema="streamsource-legacy",
        create_schema=True,
    )


def native_sql(path: Path, name: str) -> Any:
    return load_backend(
        "sql", name=name, url=f"sqlite+aiosqlite:///{path}", schema="native", create_schema=True
    )


def memory(name: str) -> Any:
    return load_backend("memory", name=name)


def history(count: int, *, prefix: str = "s") -> list[StreamDraft]:
    """Streams as years of a legacy app leave them: enums, pins, padded text, old timestamps,
    a few duplicates of one natural key."""
    old = datetime(2021, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
    drafts = []
    for i in range(count):
        dup = i % 97 == 0
        drafts.append(
            StreamDraft(
                source=f"{prefix}{i % 40}" if not dup else f"{prefix}-dup",
                link=f"https://twitch.tv/{prefix}{i}" if not dup else f"https://x.test/{prefix}",
                title=f"title {i}" if not dup else None,
                status=("live", "offline", "unknown")[i % 3],
                platform=("tiktok", "twitch", "youtube", None)[i % 4],
                is_pinned=i % 11 == 0,
                city=f" City{i % 7} " if i % 5 == 0 else None,
                state="TX" if i % 2 else None,
                last_live_at=old + timedelta(hours=i),
                created_at=old + timedelta(minutes=i),
            )
        )
    return drafts


@pytest.fixture
async def emulator() -> AsyncIterator[Any]:
    """A fresh emulator on 127.0.0.1 with one editor, rate limit out of the way."""
    from multibackend_streamsource.emulator import UserSpec, run_emulator

    async with run_emulator(
        users=[UserSpec(email=EDITOR, password=PASSWORD, role="editor")],
        rate_limit=1_000_000,
    ) as emu:
        yield emu


def streamsource(base_url: str, name: str = "ss", **options: Any) -> Any:
    return load_backend(
        "streamsource",
        name=name,
        base_url=base_url,
        email=EDITOR,
        password=PASSWORD,
        requests_per_minute=options.pop("requests_per_minute", 1_000_000),
        **options,
    )
