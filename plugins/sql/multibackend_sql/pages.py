"""Keyset pages for ``iter_streams``, fetched on the driver connection.

Walking a whole table is the one place where SQLAlchemy's per-row result machinery shows: about
a fifth of the time per row. The page statement is compiled once per walk, and each page is
fetched with the driver itself (aiosqlite, asyncpg), as plain tuples or records, on a connection
checked out through SQLAlchemy's pool. Other drivers, and walks inside ``transaction()`` (whose
transaction SQLAlchemy's adapter starts lazily), go through SQLAlchemy as usual.

Driver exceptions are re-raised as SQLAlchemy's DBAPIError family, so the one error mapping in
:mod:`multibackend_sql.errors` applies.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["KeysetPages"]

_LAST = "_multibackend_last_id"
_DRIVERS = ("aiosqlite", "asyncpg")


class KeysetPages:
    """Pages of ``base`` (ordered by ``id_column``, limited) after a given id."""

    def __init__(self, base: sa.Select[Any], id_column: sa.ColumnElement[Any], dialect: Any):
        self.first = base
        self.after = base.where(id_column > sa.bindparam(_LAST))
        self.driver: str = dialect.driver
        self._compiled = (
            (self.first.compile(dialect=dialect), self.after.compile(dialect=dialect))
            if self.driver in _DRIVERS
            else None
        )

    async def fetch(self, conn: AsyncConnection, last: Any, *, raw: bool) -> Sequence[Any]:
        """The page after ``last`` (None: the first page). ``raw`` allows the driver path."""
        if self._compiled is None or not raw:
            stmt = self.first if last is None else self.after.params({_LAST: last})
            result: Sequence[Any] = (await conn.execute(stmt)).all()
            return result
        compiled = self._compiled[0 if last is None else 1]
        values = compiled.construct_params(params=None if last is None else {_LAST: last})
        params = [values[name] for name in compiled.positiontup or ()]
        sql = compiled.string
        driver: Any = (await conn.get_raw_connection()).driver_connection
        if self.driver == "aiosqlite":
            try:
                async with driver.execute(sql, params) as cursor:
                    rows: Sequence[Any] = await cursor.fetchall()
                    return rows
            except sqlite3.Error as exc:
                raise sa_exc.DBAPIError.instance(sql, params, exc, sqlite3.Error) from exc
        import asyncpg

        try:
            records: Sequence[Any] = await driver.fetch(sql, *params)
            return records
        except asyncpg.PostgresError as exc:
            raise sa_exc.DBAPIError(sql, params, exc) from exc
        except asyncpg.InterfaceError as exc:
            raise sa_exc.InterfaceError(sql, params, exc) from exc
