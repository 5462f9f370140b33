"""B's side of a verify run: B's streams that the walk of A did not meet in step, by native id,
in a private temporary SQLite file (on disk, not in memory: constant memory on any number of
entities), and the id map look-up of a chunk of A.

* Rows are stored serialized with :mod:`marshal` (about twice as fast as pickle both ways for
  tuples of text, numbers and None); a row marshal cannot write is pickled instead. The file is
  private to the run (``mkstemp``, mode 0600, removed on close): nothing else's bytes are ever
  loaded. B's ids are stored as they are (an int as INTEGER, text as TEXT).
* When the journal is a SQLite file, it is ATTACHed read-only and a chunk of A's ids is
  translated through the id map in one statement (:meth:`SideTable.translate`), without a round
  trip through the journal's engine. Every statement runs in its own transaction (autocommit),
  so each one reads the id map as it is then — never an old snapshot. Otherwise (PostgreSQL)
  the caller translates through the journal.
* A row matched by A is marked seen by rowid; the unseen rows are B's candidate extras.
* Chunk keys travel as one JSON parameter (``json_each``), or as ``VALUES`` lists when this
  SQLite has no JSON functions.
"""

from __future__ import annotations

import marshal
import os
import pickle
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from multibackend.journal.schema import id_map

__all__ = ["SideTable", "dump_row", "journal_file", "load_row"]

Row = tuple[Any, ...]
# marshal format 2: no back-references (format 3+ marks objects by refcount) and no interned
# flag, so equal rows of plain values give equal bytes and the common case compares bytes.
MARSHAL_VERSION = 2
# Parameters a VALUES list carries at most (SQLite before 3.32 allows 999 per statement).
_VALUES_CHUNK = 400
# B's id as stored: native type (INTEGER or TEXT), so int ids walked in order append; an int
# beyond SQLite's 64 bits is stored as text (see _key).
_B_ID = (
    "CASE WHEN d.id_is_int AND CAST(d.native_id AS INTEGER) = d.native_id"
    " THEN CAST(d.native_id AS INTEGER) ELSE d.native_id END"
)
_INT64 = range(-(2**63), 2**63)


def _key(native_id: Any) -> Any:
    """A B id as the side table stores it: an int SQLite can hold, else text."""
    if native_id.__class__ is int and native_id in _INT64:
        return native_id
    return native_id if native_id.__class__ is str else str(native_id)


def journal_file(url: Any) -> str | None:
    """The path of a SQLite journal's database file (a SQLAlchemy URL), or None when the journal
    is not a plain SQLite file (PostgreSQL, in-memory, a ``file:`` URI)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database if Path(database).is_file() else None


def _has_json(db: sqlite3.Connection) -> bool:
    try:
        db.execute("SELECT count(*) FROM json_each('[1]')").fetchone()
    except sqlite3.Error:
        return False
    return True


def dump_row(row: Row) -> bytes:
    """A canonical row as the side table stores it (``ValueError`` for values marshal cannot
    write: :meth:`SideTable.add` pickles those rows instead)."""
    return marshal.dumps(row, MARSHAL_VERSION)


def load_row(data: bytes | None, pdata: bytes | None) -> Row | None:
    """A stored row back (None for a stream B does not have)."""
    row: Row | None = None
    if data is not None:
        row = marshal.loads(data)
    elif pdata is not None:
        row = pickle.loads(pdata)
    return row


class SideTable:
    """B's streams by native id (an int or text, stored as such): canonical row, seen flag."""

    def __init__(
        self,
        *,
        journal: str | None = None,
        entity_type: str = "stream",
        a_name: str = "",
        b_name: str = "",
        use_json: bool | None = None,
    ) -> None:
        fd, name = tempfile.mkstemp(prefix="multibackend-verify-", suffix=".db")
        os.close(fd)
        self.path = Path(name)
        # Autocommit: a statement that reads the attached journal must not run inside a
        # transaction opened earlier (it would keep reading that transaction's snapshot).
        self.db = sqlite3.connect(name, check_same_thread=False, isolation_level=None, uri=True)
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute(
            "CREATE TABLE b (id PRIMARY KEY, seen INTEGER NOT NULL DEFAULT 0,"
            " data BLOB, pdata BLOB)"
        )
        self.json = _has_json(self.db) if use_json is None else use_json
        self._ids = (entity_type, a_name, b_name)
        self.attached = False
        if journal is not None:
            try:
                uri = Path(journal).resolve().as_uri() + "?mode=ro"
                self.db.execute("PRAGMA busy_timeout = 30000")
                self.db.execute("ATTACH DATABASE ? AS journal", (uri,))
                self.db.execute(f"SELECT 1 FROM journal.{id_map.name} LIMIT 1").fetchall()
            except sqlite3.Error:
                self.attached = False
            else:
                self.attached = True

    # --- loading B ---------------------------------------------------------------------------

    def add(self, rows: Sequence[tuple[Any, Row]]) -> None:
        """Store B's streams: (native id, canonical row)."""
        dumps, version = marshal.dumps, MARSHAL_VERSION
        self.db.execute("BEGIN")
        try:
            try:
                self.db.executemany(
                    "INSERT OR REPLACE INTO b (id, data) VALUES (?, ?)",
                    [
                        (
                            i if i.__class__ is int or i.__class__ is str else str(i),
                            dumps(r, version),
                        )
                        for i, r in rows
                    ],
                )
            except (ValueError, OverflowError):
                for native_id, row in rows:  # the slow way, row by row (OR REPLACE: idempotent)
                    self._add_one(native_id, row)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _add_one(self, native_id: Any, row: Row) -> None:
        key = _key(native_id)
        try:
            values: tuple[Any, Any, Any] = (key, dump_row(row), None)
        except ValueError:  # a value marshal cannot write
            values = (key, None, pickle.dumps(row, pickle.HIGHEST_PROTOCOL))
        self.db.execute("INSERT OR REPLACE INTO b (id, data, pdata) VALUES (?, ?, ?)", values)

    # --- matching chunks of A ----------------------------------------------------------------

    def _keyed(self, texts: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
        """``WITH j(k, v)`` sources (position, value) over ``texts``, with their parameters."""
        if self.json:
            import json

            yield "SELECT key, value FROM json_each(?)", [json.dumps(list(texts))]
            return
        for start in range(0, len(texts), _VALUES_CHUNK):
            part = list(texts[start : start + _VALUES_CHUNK])
            rows = ", ".join(f"({start + i}, ?)" for i in range(len(part)))
            yield f"VALUES {rows}", part

    def translate(self, texts: Sequence[str]) -> list[Any]:
        """For each A id (text), B's id through the attached journal's id map as it is now
        (None when unmapped)."""
        entity_type, a_name, b_name = self._ids
        out: list[Any] = []
        for source, params in self._keyed(texts):
            out.extend(
                r[0]
                for r in self.db.execute(
                    f"WITH j(k, v) AS ({source}) SELECT {_B_ID} FROM j"
                    f" LEFT JOIN journal.{id_map.name} AS s ON s.entity_type = ?"
                    " AND s.backend = ? AND s.native_id = j.v"
                    f" LEFT JOIN journal.{id_map.name} AS d ON d.entity_type = s.entity_type"
                    " AND d.entity_key = s.entity_key AND d.backend = ? ORDER BY j.k",
                    [*params, entity_type, a_name, b_name],
                )
            )
        return out

    def match_b(self, ids: Sequence[Any]) -> list[tuple[int | None, Any, Any]]:
        """For each B id: the side row's rowid, marshalled and pickled row (None when absent)."""
        out: list[tuple[int | None, Any, Any]] = []
        for source, params in self._keyed([_key(i) for i in ids]):
            out.extend(
                self.db.execute(
                    f"WITH j(k, v) AS ({source})"
                    " SELECT b.rowid, b.data, b.pdata FROM j LEFT JOIN b ON b.id = j.v"
                    " ORDER BY j.k",
                    params,
                )
            )
        return out

    def mark(self, rowids: Sequence[int]) -> None:
        """Mark rows as seen (matched by a stream of A)."""
        for source, params in self._keyed(rowids):
            self.db.execute(
                f"WITH j(k, v) AS ({source})"
                " UPDATE b SET seen = 1 WHERE rowid IN (SELECT v FROM j)",
                params,
            )

    def unseen(self, after: int, limit: int) -> list[tuple[int, Any]]:
        """Rows no stream of A matched, in rowid order after ``after``: (rowid, B's id)."""
        return list(
            self.db.execute(
                "SELECT rowid, id FROM b WHERE seen = 0 AND rowid > ? ORDER BY rowid LIMIT ?",
                (after, limit),
            )
        )

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)
