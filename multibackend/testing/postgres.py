"""pytest fixtures for tests that need a real PostgreSQL server.

Registered in the root ``conftest.py`` (``pytest_plugins``); any test may ask for ``pg_url``.

* ``MULTIBACKEND_TEST_PG_URL`` — a server URL (``postgresql+asyncpg://user@host:port/db``) whose
  user may create databases. ``scripts/with-postgres`` (used by ``make test``) starts a
  throwaway cluster and sets it.
* Without it the tests skip, saying why — unless ``MULTIBACKEND_REQUIRE_PG=1`` (set by
  ``.ci/run``), under which they fail: CI must never pass by skipping its PostgreSQL tests.

``pg_url`` gives each test a fresh, empty database (about 0.1 s to create on a throwaway
cluster) and drops it afterwards, so tests never see each other's tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

__all__ = ["PG_URL_VARIABLE", "REQUIRE_PG_VARIABLE", "pg_server_url", "pg_url"]

PG_URL_VARIABLE = "MULTIBACKEND_TEST_PG_URL"
REQUIRE_PG_VARIABLE = "MULTIBACKEND_REQUIRE_PG"


def pg_server_url() -> str:
    """The server URL from the environment; skips (or fails under MULTIBACKEND_REQUIRE_PG=1)
    the calling test when it is not set."""
    url = os.environ.get(PG_URL_VARIABLE, "").strip()
    if url:
        return url
    if os.environ.get(REQUIRE_PG_VARIABLE) == "1":
        pytest.fail(
            f"{PG_URL_VARIABLE} is not set and {REQUIRE_PG_VARIABLE}=1: PostgreSQL tests must "
            "run here (use scripts/with-postgres or make test)",
            pytrace=False,
        )
    pytest.skip(f"no PostgreSQL: {PG_URL_VARIABLE} is not set (make test starts one)")


def _asyncpg_dsn(url: str) -> str:
    # asyncpg speaks libpq URLs, without SQLAlchemy's "+driver" suffix.
    scheme, sep, rest = url.partition("://")
    return "postgresql" + sep + rest if scheme.startswith("postgresql") else url


def _with_database(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """The URL of a fresh, empty PostgreSQL database for this test (asyncpg driver), dropped
    after the test."""
    server = pg_server_url()
    import asyncpg

    name = f"mbtest_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(_asyncpg_dsn(server))
    try:
        # The name is generated above (hex digits), not user input.
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(server, name)
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(server))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
