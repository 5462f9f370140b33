"""Fixtures for the sql plugin's tests: a backend on SQLite and on PostgreSQL, for both presets.

PostgreSQL cases use the shared ``pg_url`` fixture (a fresh database per test); they skip with a
reason without a server, and fail under MULTIBACKEND_REQUIRE_PG=1.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from multibackend_sql import SqlBackend
from multibackend_sql.mapping import PRESETS

from multibackend.options import bind_options

MakeBackend = Callable[..., SqlBackend]

ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
PRESET_NAMES = ["native", "streamsource-legacy"]


def build_backend(url: str, name: str = "legacy", **options: Any) -> SqlBackend:
    """A backend built the way the registry builds it (options bound from a plain mapping)."""
    raw = {"url": url, **options}
    return SqlBackend(name, bind_options(SqlBackend.Options, raw, where=f"backends.{name}"))


@pytest.fixture
def make_backend() -> MakeBackend:
    return build_backend


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'streams.db'}"


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A fresh, empty database: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture(params=PRESET_NAMES)
def preset(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest, sqlite_url: str) -> tuple[str, bool]:
    """(database URL, whether it is shared so that tables need unique names): a fresh SQLite
    file, or the session's PostgreSQL database (a database per test costs more than most of
    these tests)."""
    if request.param == "sqlite":
        return sqlite_url, False
    url: str = request.getfixturevalue("pg_session_url")
    return url, True


def fresh_table_options(target: tuple[str, bool], preset: str) -> dict[str, Any]:
    """Options for a backend on a new, empty table of ``target``."""
    url, shared = target
    options: dict[str, Any] = {"url": url, "schema": preset, "create_schema": True}
    if shared:
        options["table"] = f"{PRESETS[preset].table}_{uuid.uuid4().hex[:12]}"
    return options


@pytest.fixture
def table_options() -> Callable[[tuple[str, bool], str], dict[str, Any]]:
    return fresh_table_options


@pytest.fixture
async def backend(target: tuple[str, bool], preset: str) -> AsyncIterator[SqlBackend]:
    """A fresh, empty, opened backend (its table created by create_schema)."""
    async with build_backend(**fresh_table_options(target, preset)) as opened:
        yield opened
