"""SQLite persistence for the emulator's state (``--db PATH``), through aiosqlite.

The in-memory :class:`~.store.Store` stays the source of truth while the emulator runs; every
change is written through to the file and committed before the answer is sent, and the whole
state is loaded back at start. Stored: users (password digests only), streams, revoked token
ids, feature flags and the token secret (so tokens survive a restart).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aiosqlite
import attrs

from multibackend_streamsource.emulator.records import StreamRecord, UserRecord

__all__ = ["LoadedState", "SqlitePersistence"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
    role TEXT NOT NULL, service_account INTEGER NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, source TEXT, link TEXT, status TEXT,
    platform TEXT, orientation TEXT, kind TEXT, city TEXT, state TEXT, notes TEXT, title TEXT,
    posted_by TEXT, location_id INTEGER, is_pinned INTEGER NOT NULL, is_archived INTEGER NOT NULL,
    started_at TEXT, ended_at TEXT, last_checked_at TEXT, last_live_at TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jwt_denylist (jti TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_STREAM_COLUMNS: Final = tuple(a.name for a in attrs.fields(StreamRecord))
_USER_COLUMNS: Final = tuple(a.name for a in attrs.fields(UserRecord))
_TIME_COLUMNS: Final = frozenset(
    {"started_at", "ended_at", "last_checked_at", "last_live_at", "created_at", "updated_at"}
)
_BOOL_COLUMNS: Final = frozenset({"is_pinned", "is_archived", "service_account"})


def _to_db(name: str, value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


def _from_db(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _TIME_COLUMNS:
        return datetime.fromisoformat(value)
    if name in _BOOL_COLUMNS:
        return bool(value)
    return value


@attrs.frozen(kw_only=True)
class LoadedState:
    users: list[UserRecord]
    streams: list[StreamRecord]
    denylist: set[str]
    settings: dict[str, str]


class SqlitePersistence:
    """Writes the emulator's state to one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SqlitePersistence is not open")
        return self._db

    async def open(self) -> LoadedState:
        """Open (creating) the file and return everything stored in it."""
        self._db = await aiosqlite.connect(self.path)
        # WAL with synchronous=NORMAL: every change still survives the emulator being killed,
        # without an fsync per request (which made --db about ten times slower than memory).
        await self.db.execute("PRAGMA journal_mode = WAL")
        await self.db.execute("PRAGMA synchronous = NORMAL")
        await self.db.executescript(_SCHEMA)
        await self.db.commit()
        users = [
            UserRecord(**{n: _from_db(n, v) for n, v in zip(_USER_COLUMNS, row, strict=True)})
            async for row in await self.db.execute(
                f"SELECT {', '.join(_USER_COLUMNS)} FROM users ORDER BY id"
            )
        ]
        streams = [
            StreamRecord(**{n: _from_db(n, v) for n, v in zip(_STREAM_COLUMNS, row, strict=True)})
            async for row in await self.db.execute(
                f"SELECT {', '.join(_STREAM_COLUMNS)} FROM streams ORDER BY id"
            )
        ]
        denylist = {row[0] async for row in await self.db.execute("SELECT jti FROM jwt_denylist")}
        settings = {
            row[0]: row[1]
            async for row in await self.db.execute("SELECT name, value FROM settings")
        }
        return LoadedState(users=users, streams=streams, denylist=denylist, settings=settings)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _upsert(self, table: str, columns: tuple[str, ...], values: list[object]) -> None:
        marks = ", ".join("?" for _ in columns)
        await self.db.execute(
            f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({marks})", values
        )
        await self.db.commit()

    async def save_user(self, user: UserRecord) -> None:
        values = [_to_db(n, getattr(user, n)) for n in _USER_COLUMNS]
        await self._upsert("users", _USER_COLUMNS, values)

    async def delete_user(self, user_id: int) -> None:
        await self.db.execute("DELETE FROM streams WHERE user_id = ?", (user_id,))
        await self.db.execute("DELETE FROM users WHERE id = ?", (user_id,))
        await self.db.commit()

    async def save_stream(self, stream: StreamRecord) -> None:
        values = [_to_db(n, getattr(stream, n)) for n in _STREAM_COLUMNS]
        await self._upsert("streams", _STREAM_COLUMNS, values)

    async def delete_stream(self, stream_id: int) -> None:
        await self.db.execute("DELETE FROM streams WHERE id = ?", (stream_id,))
        await self.db.commit()

    async def revoke(self, jti: str) -> None:
        await self.db.execute("INSERT OR IGNORE INTO jwt_denylist (jti) VALUES (?)", (jti,))
        await self.db.commit()

    async def save_setting(self, name: str, value: str) -> None:
        await self._upsert("settings", ("name", "value"), [name, value])

    async def clear(self) -> None:
        for table in ("streams", "users", "jwt_denylist"):
            await self.db.execute(f"DELETE FROM {table}")
        await self.db.commit()
