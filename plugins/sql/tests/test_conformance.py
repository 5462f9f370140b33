"""The protocol's conformance suite, on SQLite and PostgreSQL, for both presets (4 runs).

Each test gets a fresh, empty table: a new SQLite file, or on PostgreSQL a uniquely named table
in the session's shared database (creating a database per test would cost more than the
suite's tests themselves).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from multibackend_sql import SqlBackend

from multibackend.registry import load_backend
from multibackend.testing.conformance import BackendConformance

TableOptions = Callable[[tuple[str, bool], str], dict[str, Any]]


class TestSqlConformance(BackendConformance):
    # Writes issue their own timestamps at millisecond precision.
    timestamp_resolution = 0.002

    @pytest.fixture
    async def backend(
        self, target: tuple[str, bool], preset: str, table_options: TableOptions
    ) -> AsyncIterator[SqlBackend]:
        options = table_options(target, preset)
        async with load_backend("sql", name="conformance", **options) as opened:
            assert isinstance(opened, SqlBackend)
            # Small keyset pages, so the suite's iteration tests cross page boundaries.
            opened.iter_page_size = 40  # type: ignore[misc]
            yield opened


class TestSqlConformanceSoftDelete(BackendConformance):
    """The legacy preset with ``delete = "soft"``: deleted streams only get the archive flag,
    and must still behave as deleted everywhere the protocol can see."""

    timestamp_resolution = 0.002

    @pytest.fixture
    async def backend(self, target: tuple[str, bool]) -> AsyncIterator[SqlBackend]:
        url, shared = target
        table = "Streams" + (f"_{uuid.uuid4().hex[:12]}" if shared else "")
        async with load_backend(
            "sql",
            name="conformance",
            url=url,
            schema="streamsource-legacy",
            table=table,
            create_schema=True,
            delete="soft",
        ) as opened:
            assert isinstance(opened, SqlBackend)
            opened.iter_page_size = 40  # type: ignore[misc]
            yield opened
