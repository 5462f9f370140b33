"""pytest fixtures for tests that need a real PostgreSQL server.

Registered in the root ``conftest.py`` (``pytest_plugins``); any test may ask for ``pg_url``.

* ``MULTIBACKEND_TEST_PG_URL`` — a server URL (``postgresql+asyncpg://user@host:port/db``) whose
  user may create databases. ``scripts/with-postgres`` (used by ``make test``) starts a
  throwaway cluster and sets it.
* Without it the tests skip, saying why — unless ``MULTIBACKEND_REQUIRE_PG=1`` (set by
  ``.ci/run``), under which they fail: CI must never pass by skipping its PostgreSQL tests.

``pg_url`` gives each test a fresh, empty database and drops it afterwards, so tests never see
each other's tables. ``pg_session_url`` is one database for the whole session, for suites of
many small tests that isolate themselves by table names.

Creating a database costs the server about 0.1 s, more than most tests: so databases are
created a couple of tests ahead, and dropped after them, on a background thread with its own
event loop and connections (nothing is shared with the tests' loops).
Databases left over at the end of the session are dropped.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

__all__ = [
    "PG_URL_VARIABLE",
    "REQUIRE_PG_VARIABLE",
    "pg_server_url",
    "pg_session_url",
    "pg_url",
]

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


async def _admin(server: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(server))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class _DatabasePool:
    """Fresh databases made ahead of need, on one worker thread (``asyncio.run`` per job)."""

    def __init__(self, server: str, ahead: int = 2) -> None:
        self.server = server
        self.ahead = ahead
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-databases")
        self._ready: deque[tuple[str, Future[None]]] = deque()
        self._lock = threading.Lock()

    def _submit(self, statement: str) -> Future[None]:
        return self._executor.submit(asyncio.run, _admin(self.server, statement))

    def _prepare_one(self) -> None:
        # The name is generated here (hex digits), never taken from input.
        name = f"mbtest_{uuid.uuid4().hex[:16]}"
        self._ready.append((name, self._submit(f'CREATE DATABASE "{name}"')))

    def take(self) -> str:
        """The name of a new, empty database (waits for it if it is not ready yet)."""
        with self._lock:
            if not self._ready:
                self._prepare_one()
            name, created = self._ready.popleft()
            while len(self._ready) < self.ahead:
                self._prepare_one()
        created.result()
        return name

    def drop(self, name: str) -> None:
        self._submit(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        with self._lock:
            leftovers = list(self._ready)
            self._ready.clear()
        for name, created in leftovers:
            if created.exception() is None:
                self.drop(name)
        self._executor.shutdown(wait=True)


_pools: dict[str, _DatabasePool] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop the databases made ahead and not used; wait for pending drops."""
    while _pools:
        _, pool = _pools.popitem()
        pool.close()


def _pool(server: str) -> _DatabasePool:
    pool = _pools.get(server)
    if pool is None:
        pool = _pools[server] = _DatabasePool(server)
    return pool


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database for this test (asyncpg driver), dropped
    after the test."""
    server = pg_server_url()
    pool = _pool(server)
    name = pool.take()
    try:
        yield _with_database(server, name)
    finally:
        pool.drop(name)


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """The URL of one PostgreSQL database shared by every test of the session that asks for
    it (dropped at the end). Cheaper than ``pg_url`` for suites of many small tests, which then
    must not collide: each test creates its own, uniquely named tables."""
    server = pg_server_url()
    pool = _pool(server)
    name = pool.take()
    try:
        yield _with_database(server, name)
    finally:
        pool.drop(name)
