"""Converting between stream values and what the mapped table's columns hold.

Built once per ``open()`` from the mapping and the reflected table, so per-row work is one
generated call and a few dictionary lookups: the hot paths (``iter_streams`` over a whole
table) pay no reflection and no type dispatch.

* Timestamps: a column without a zone holds UTC wall time (what the legacy app wrote); values
  read from it are tagged UTC. Zoned columns are read and written in UTC. SQLite stores no zone
  either way. A timestamp stored as text is parsed (ISO 8601).
* Booleans: NULL reads as false (the legacy ``isPinned`` is nullable).
* Enums: see :mod:`multibackend_sql.mapping`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from multibackend.model import Stream, StreamId, User
from multibackend_sql.mapping import (
    BOOLEAN_FIELDS,
    ENUM_FALLBACKS,
    ENUM_FIELDS,
    ENUM_NULLS,
    TIMESTAMP_FIELDS,
    TableMapping,
)

__all__ = ["Codec"]

Reader = Callable[[Any], Any]


def parse_time(text: str) -> datetime:
    """An ISO 8601 timestamp, also in Sequelize's SQLite spelling (``... 23:41:13.123 +00:00``)."""
    text = text.strip()
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return datetime.fromisoformat(text.replace(" +", "+").replace(" -", "-"))


def read_time(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (zone-less values are UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_time(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a timestamp, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)


_fromisoformat = datetime.fromisoformat


def read_text_time(value: Any) -> datetime | None:
    """A timestamp stored as text (SQLite). The common case, zone-less UTC text, is parsed with
    the zone appended: several times faster than parsing and then attaching the zone."""
    if value is None:
        return None
    try:
        parsed = _fromisoformat(value + "+00:00")
    except (ValueError, TypeError):
        return read_time(value)
    # Date-only text ("2020-01-01") parses without the appended zone on Python 3.11.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _enum_reader(
    readers: Mapping[str, StrEnum], fallback: StrEnum | None, null: StrEnum | None
) -> Reader:
    exact = dict(readers)

    def read(value: Any) -> StrEnum | None:
        if value is None:
            return null
        member = exact.get(value)
        if member is None:
            member = exact.get(str(value).lower(), fallback)
        return member

    return read


class Codec:
    """Reads rows of ``table`` into Streams and turns field values into column values."""

    def __init__(self, mapping: TableMapping, table: sa.Table, *, sqlite: bool) -> None:
        self.mapping = mapping
        self.table = table
        self.sqlite = sqlite
        #: Selected columns, in MAPPABLE_FIELDS order, with the field each one holds.
        self.fields: tuple[str, ...] = tuple(mapping.columns)
        # SQLite timestamps are text; they are parsed here (parse_time), which also reads what
        # other apps wrote (Sequelize's "... +00:00"), where SQLAlchemy's parser would fail.
        self.columns: tuple[sa.ColumnElement[Any], ...] = tuple(
            sa.type_coerce(table.c[mapping.columns[f]], sa.Text()).label(mapping.columns[f])
            if sqlite and f in TIMESTAMP_FIELDS
            else table.c[mapping.columns[f]]
            for f in self.fields
        )
        self.id_column = table.c[mapping.columns["id"]]
        self._owner = "user_id" in mapping.columns
        self._no_source = "source" not in mapping.columns
        self._id_is_int = _is_integer(self.id_column)
        self._zoned = {
            f: (not sqlite) and bool(getattr(table.c[c].type, "timezone", False))
            for f, c in mapping.columns.items()
            if f in TIMESTAMP_FIELDS
        }
        self._time_is_text = {
            f: not isinstance(table.c[c].type, sa.DateTime)
            for f, c in mapping.columns.items()
            if f in TIMESTAMP_FIELDS
        }
        self._readers = {field: self._reader(field) for field in self.fields}
        self._read = self._compile_reader()

    def _reader(self, field: str) -> Reader | None:
        if field in TIMESTAMP_FIELDS:
            return read_text_time if self.sqlite or self._time_is_text[field] else read_time
        if field in BOOLEAN_FIELDS:
            return bool  # NULL reads as false
        if field in ENUM_FIELDS:
            return _enum_reader(
                self.mapping.readers[field], ENUM_FALLBACKS[field], ENUM_NULLS[field]
            )
        return None

    def _compile_reader(self) -> Callable[[Any], Stream]:
        """A function building a Stream from a row in one expression.

        Reading a whole table is dominated by per-row Python overhead; a generated function
        (one call, no loop, no intermediate dict) roughly halves it. The source is built only
        from field names of MAPPABLE_FIELDS and column positions, never from configuration.
        """
        env: dict[str, Any] = {"Stream": Stream, "User": User}
        args: list[str] = []
        index = {field: i for i, field in enumerate(self.fields)}
        for field, i in index.items():
            if field in ("is_archived", "user_id", "user_email"):
                continue
            reader, cell = self._readers[field], f"row[{i}]"
            if reader is None:
                expr = cell
            elif field in TIMESTAMP_FIELDS:
                env[f"read{i}"] = reader
                expr = f"(None if {cell} is None else read{i}({cell}))"
            elif field in BOOLEAN_FIELDS:
                expr = f"bool({cell})"
            else:
                # Exact stored spelling first (a dict hit), the lenient reader otherwise.
                env[f"exact{i}"] = dict(self.mapping.readers[field])
                env[f"read{i}"] = reader
                expr = f"(exact{i}.get({cell}) or read{i}({cell}))"
            args.append(f"{field}={expr}")
        if "source" not in index:
            args.append("source=None")
        if "user_id" in index:
            owner = f"row[{index['user_id']}]"
            email = f"(row[{index['user_email']}] or '')" if "user_email" in index else "''"
            args.append(f"user=(None if {owner} is None else User(id={owner}, email={email}))")
        source = "def read(row):\n    return Stream(" + ", ".join(args) + ")\n"
        exec(compile(source, "<multibackend_sql row reader>", "exec"), env)
        read: Callable[[Any], Stream] = env["read"]
        return read

    # --- reading ----------------------------------------------------------------------------

    def stream(self, row: Any) -> Stream:
        """The Stream a selected row (columns in ``self.columns`` order) holds.

        Raises ValueError naming the row and the column when a stored value cannot be read.
        """
        try:
            return self._read(row)
        except (ValueError, TypeError) as exc:
            raise ValueError(self._explain(row, exc)) from None

    def _explain(self, row: Any, exc: Exception) -> str:
        for i, field in enumerate(self.fields):
            reader = self._readers[field]
            if reader is None:
                continue
            try:
                reader(row[i])
            except (ValueError, TypeError) as problem:
                return f"row {row[0]!r}: column {self.mapping.columns[field]!r}: {problem}"
        return f"row {row[0]!r}: {exc}"

    # --- writing ----------------------------------------------------------------------------

    def value(self, field: str, value: Any) -> Any:
        """What to store in ``field``'s column for the model value ``value``."""
        if value is None:
            return None
        if field in ENUM_FIELDS:
            key = value.value if isinstance(value, StrEnum) else str(value)
            return self.mapping.values[field][key]
        if field in TIMESTAMP_FIELDS:
            return self.time(field, value)
        return value

    def time(self, field: str, value: datetime) -> Any:
        utc = value.astimezone(UTC)
        if self._zoned.get(field, False):
            return utc
        naive = utc.replace(tzinfo=None)
        if self._time_is_text.get(field, False):
            return naive.isoformat(sep=" ")
        return naive

    def row_values(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Column name → stored value for the mapped fields among ``changes``."""
        out: dict[str, Any] = {}
        columns = self.mapping.columns
        for field, value in changes.items():
            if field in columns:
                out[columns[field]] = self.value(field, value)
        return out

    def native_id(self, id: StreamId) -> Any:
        """``id`` as the id column holds it, or None when it cannot be one (so: not found)."""
        if isinstance(id, bool):
            return None
        if self._id_is_int:
            if isinstance(id, int):
                return id
            text = id.strip()
            if text.lstrip("-").isdigit():
                return int(text)
            return None
        return str(id)

    def owner_value(self, user_id: StreamId) -> Any:
        """``user_id`` as the owner column holds it, or None when no row can have it."""
        column = self.table.c[self.mapping.columns["user_id"]]
        if _is_integer(column):
            if isinstance(user_id, int):
                return user_id
            text = user_id.strip()
            return int(text) if text.lstrip("-").isdigit() else None
        return str(user_id)


def _is_integer(column: sa.Column[Any]) -> bool:
    try:
        return column.type.python_type is int
    except NotImplementedError:
        return False
