"""How stream fields map onto a table: presets, custom overrides, and checks against the database.

A :class:`TableMapping` says which column holds each field (``columns``) and how enum values are
spelled in the table (``values``). It is resolved from the options at construction (so config
mistakes surface before any connection) and checked against the live table at ``open()`` by
reflection (so a misnamed column fails there, naming the table, the column and the config key,
instead of failing the first query).

Besides the stream fields (:data:`multibackend.model.STREAM_FIELDS`), these may be mapped:

* ``id`` — the primary key (required);
* ``is_archived`` — the archive flag (the legacy ``isExpired``); required for ``delete = "soft"``;
* ``user_id``, ``user_email`` — the owner, read into ``Stream.user`` and used by the ``user_id``
  filter. Drafts carry no owner, so the plugin never writes them.

Enum values are read without regard to case. A stored value that names no member reads as the
field's fallback: ``other`` for platform (the legacy column is free text), ``unknown`` for status,
``video`` for kind, none for orientation.
"""

from __future__ import annotations

import difflib
import hashlib
import unicodedata
from collections.abc import Mapping
from enum import StrEnum
from typing import Final

import attrs
import sqlalchemy as sa

from multibackend.errors import ConfigError
from multibackend.model import (
    PRESERVABLE_TIMESTAMPS,
    STREAM_FIELDS,
    WRITABLE_FIELDS,
    Kind,
    Orientation,
    Platform,
    StreamStatus,
)
from multibackend_sql.options import Options

__all__ = [
    "ENUM_FIELDS",
    "MAPPABLE_FIELDS",
    "PRESETS",
    "TableMapping",
    "build_table",
    "check_against",
    "check_identifier",
    "resolve_mapping",
]

#: Fields a mapping may name, in the order columns are selected.
MAPPABLE_FIELDS: Final = ("id", *STREAM_FIELDS, "is_archived", "user_id", "user_email")

ENUM_FIELDS: Final[dict[str, type[StrEnum]]] = {
    "status": StreamStatus,
    "platform": Platform,
    "orientation": Orientation,
    "kind": Kind,
}

#: What an unrecognized stored value reads as.
ENUM_FALLBACKS: Final[dict[str, StrEnum | None]] = {
    "status": StreamStatus.UNKNOWN,
    "platform": Platform.OTHER,
    "orientation": None,
    "kind": Kind.VIDEO,
}

#: What NULL reads as: the field's default (status and kind cannot be null in a Stream).
ENUM_NULLS: Final[dict[str, StrEnum | None]] = {
    "status": StreamStatus.UNKNOWN,
    "platform": None,
    "orientation": None,
    "kind": Kind.VIDEO,
}

TIMESTAMP_FIELDS: Final = frozenset({"created_at", "updated_at", "last_checked_at", "last_live_at"})
BOOLEAN_FIELDS: Final = frozenset({"is_pinned", "is_archived"})

# PostgreSQL silently truncates identifiers beyond 63 bytes; longer names are surely a mistake.
MAX_IDENTIFIER_BYTES: Final = 63


@attrs.frozen(kw_only=True)
class Preset:
    table: str
    columns: Mapping[str, str]
    values: Mapping[str, Mapping[str, str]]
    #: Timestamp columns of a table created by ``create_schema`` carry a zone.
    timezone: bool


def _identity_values() -> dict[str, dict[str, str]]:
    return {field: {m.value: m.value for m in enum} for field, enum in ENUM_FIELDS.items()}


PRESETS: Final[dict[str, Preset]] = {
    "native": Preset(
        table="streams",
        columns={field: field for field in MAPPABLE_FIELDS},
        values=_identity_values(),
        timezone=True,
    ),
    # The legacy Node StreamSource table (contract §9.1). It has no orientation, kind, notes or
    # owner columns; embedLink is not mapped (Rails dropped it) and survives updates untouched.
    "streamsource-legacy": Preset(
        table="Streams",
        columns={
            "id": "id",
            "source": "source",
            "platform": "platform",
            "link": "link",
            "status": "status",
            "title": "title",
            "is_archived": "isExpired",
            "last_checked_at": "checkedAt",
            "last_live_at": "liveAt",
            "posted_by": "postedBy",
            "is_pinned": "isPinned",
            "city": "city",
            "state": "region",
            "created_at": "createdAt",
            "updated_at": "updatedAt",
        },
        values={
            "status": {"live": "Live", "offline": "Offline", "unknown": "Unknown"},
            "platform": {
                "tiktok": "TikTok",
                "facebook": "Facebook",
                "twitch": "Twitch",
                "youtube": "YouTube",
                "instagram": "Instagram",
                "other": "Other",
            },
        },
        timezone=False,
    ),
}


@attrs.frozen(kw_only=True)
class TableMapping:
    """A resolved mapping: the table, the column of each mapped field, and enum spellings.

    ``values[field][key]`` is what is written for enum member ``key``; ``readers[field]`` maps a
    lower-cased stored value back to its member.
    """

    table: str
    columns: dict[str, str]
    values: dict[str, dict[str, str]]
    readers: dict[str, dict[str, StrEnum]]
    #: The config key to fix for each mapped field (``backends.legacy.columns.is_pinned``).
    keys: dict[str, str]
    table_key: str
    timezone: bool
    preset: str

    def has(self, field: str) -> bool:
        return field in self.columns

    @property
    def stored_fields(self) -> frozenset[str]:
        """The stream fields this mapping stores and accepts on writes."""
        return frozenset(self.columns) & (WRITABLE_FIELDS | PRESERVABLE_TIMESTAMPS)


def check_identifier(name: object, key: str) -> str:
    """Return ``name`` when it is a sane SQL identifier, else raise ConfigError naming ``key``.

    Identifiers are always quoted by SQLAlchemy, so this is about catching mistakes (an empty
    name, a stray newline, a pasted paragraph), not about injection.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError("an identifier must be a non-empty string", key=key)
    if name != name.strip():
        raise ConfigError(f"identifier {name!r} has leading or trailing whitespace", key=key)
    bad = [ch for ch in name if unicodedata.category(ch).startswith("C")]
    if bad:
        raise ConfigError(f"identifier {name!r} contains control or invisible characters", key=key)
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise ConfigError(
            f"identifier {name[:20]!r}... is longer than {MAX_IDENTIFIER_BYTES} bytes", key=key
        )
    return name


def resolve_mapping(options: Options, where: str) -> TableMapping:
    """Combine the preset named by ``options.schema`` with ``table``, ``columns`` and ``values``.

    ``where`` is the config prefix (``backends.legacy``) used in error keys.
    """
    preset = PRESETS[options.schema]
    table_key = f"{where}.table" if options.table is not None else f"{where}.schema"
    table = check_identifier(
        options.table if options.table is not None else preset.table, f"{where}.table"
    )

    columns = dict(preset.columns)
    for field, column in options.columns.items():
        key = f"{where}.columns.{field}"
        if field not in MAPPABLE_FIELDS:
            raise ConfigError(
                f"unknown field {field!r} (mappable: {', '.join(MAPPABLE_FIELDS)})", key=key
            )
        if column is False:
            columns.pop(field, None)
        elif column is True:
            raise ConfigError("expected a column name, or false for no column", key=key)
        else:
            columns[field] = check_identifier(column, key)
    for field in ("id", "link"):
        if field not in columns:
            raise ConfigError("a column is required for this field", key=f"{where}.columns.{field}")
    owners: dict[str, list[str]] = {}
    for field, column in columns.items():
        owners.setdefault(column, []).append(field)
    for column, fields in owners.items():
        if len(fields) > 1:
            configured = [f for f in fields if f in options.columns] or fields
            raise ConfigError(
                f"column {column!r} is mapped to several fields ({', '.join(fields)})",
                key=f"{where}.columns.{configured[0]}",
            )
    if options.delete == "soft" and "is_archived" not in columns:
        raise ConfigError(
            "soft delete needs an archive flag column: map columns.is_archived",
            key=f"{where}.delete",
        )

    values: dict[str, dict[str, str]] = {}
    for field, enum in ENUM_FIELDS.items():
        spelled = dict(preset.values.get(field, {m.value: m.value for m in enum}))
        override = options.values.get(field, {})
        for member_key, stored in override.items():
            key = f"{where}.values.{field}.{member_key}"
            if member_key not in {m.value for m in enum}:
                allowed = ", ".join(m.value for m in enum)
                raise ConfigError(f"unknown {field} {member_key!r} (one of {allowed})", key=key)
            if not isinstance(stored, str) or not stored:
                raise ConfigError("a stored value must be a non-empty string", key=key)
            spelled[member_key] = stored
        values[field] = spelled
    for field in options.values:
        if field not in ENUM_FIELDS:
            raise ConfigError(
                f"no stored values for {field!r} (enum fields: {', '.join(ENUM_FIELDS)})",
                key=f"{where}.values.{field}",
            )

    readers: dict[str, dict[str, StrEnum]] = {}
    for field, enum in ENUM_FIELDS.items():
        reader: dict[str, StrEnum] = {}
        for member_key, stored in values[field].items():
            folded = stored.lower()
            if folded in reader:
                raise ConfigError(
                    f"{stored!r} is used for both {reader[folded].value!r} and {member_key!r} "
                    "(stored values are read without regard to case)",
                    key=f"{where}.values.{field}.{member_key}",
                )
            reader[folded] = enum(member_key)
        readers[field] = reader

    keys = {field: f"{where}.columns.{field}" for field in columns}
    ordered: dict[str, str] = {
        field: columns[field] for field in MAPPABLE_FIELDS if field in columns
    }
    return TableMapping(
        table=table,
        columns=ordered,
        values=values,
        readers=readers,
        keys=keys,
        table_key=table_key,
        timezone=preset.timezone,
        preset=options.schema,
    )


def build_table(mapping: TableMapping, metadata: sa.MetaData) -> sa.Table:
    """The table ``create_schema`` creates for ``mapping``: the legacy DDL of contract §9.1 for
    the legacy preset, one column per mapped field otherwise. Only mapped fields get columns.
    Ids are never reused, on SQLite too."""
    unknown = mapping.values["status"]["unknown"]
    cols: list[sa.Column[object]] = []
    for field, name in mapping.columns.items():
        if field == "id":
            cols.append(sa.Column(name, sa.Integer, primary_key=True, autoincrement=True))
        elif field in TIMESTAMP_FIELDS:
            required = field in ("created_at", "updated_at")
            cols.append(
                sa.Column(name, sa.DateTime(timezone=mapping.timezone), nullable=not required)
            )
        elif field in BOOLEAN_FIELDS:
            cols.append(
                sa.Column(name, sa.Boolean(create_constraint=False), server_default=sa.false())
            )
        elif field == "status":
            cols.append(sa.Column(name, sa.Text, server_default=unknown))
        elif field == "link":
            cols.append(sa.Column(name, sa.Text, nullable=False))
        else:
            cols.append(sa.Column(name, sa.Text))
    # AUTOINCREMENT on SQLite: without it a deleted stream's id is given to the next stream
    # (rowid reuse), unlike PostgreSQL and the StreamSource server; a stale id held by an app or
    # a journal would then name another stream. (Ignored by other dialects.)
    table = sa.Table(mapping.table, metadata, *cols, sqlite_autoincrement=True)
    if mapping.preset == "native":
        # For the common queries: a status filter in newest-first order, and newest first.
        for suffix, fields in (
            ("status_created", ("status", "created_at")),
            ("created", ("created_at",)),
        ):
            if all(f in mapping.columns for f in fields):
                sa.Index(
                    _index_name(mapping.table, suffix),
                    *(table.c[mapping.columns[f]] for f in fields),
                )
    return table


def _index_name(table: str, suffix: str) -> str:
    name = f"{table}_{suffix}_idx"
    if len(name.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha1(table.encode("utf-8")).hexdigest()[:12]
    return f"ix_{digest}_{suffix}"


def check_against(mapping: TableMapping, table: sa.Table | None) -> None:
    """Raise ConfigError when the reflected ``table`` (None: it does not exist) lacks a column
    the mapping names. The message names the table, the column and the key to fix."""
    if table is None:
        raise ConfigError(
            f"table {mapping.table!r} does not exist — create it, point the table option at "
            "the right one, or set create_schema = true",
            key=mapping.table_key,
        )
    present = [c.name for c in table.columns]
    for field, column in mapping.columns.items():
        if column in table.c:
            continue
        close = difflib.get_close_matches(column, present, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"column {column!r} (field {field!r}) not in table {mapping.table!r}{hint} — "
            f"its columns: {', '.join(present)}; set the right name, or false if it has none",
            key=mapping.keys[field],
        )
