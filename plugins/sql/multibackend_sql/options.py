"""The ``sql`` backend's options, as they appear under ``[backends.<name>]``.

Example (a legacy StreamSource table whose pin column has another name)::

    [backends.legacy]
    plugin = "sql"
    url = "postgresql+asyncpg://app:${PGPASSWORD}@db/legacy"
    schema = "streamsource-legacy"
    columns = { is_pinned = "pinned" }
    delete = "soft"

``url`` is a SQLAlchemy URL. ``sqlite:///`` and ``postgresql://`` are taken to mean their async
drivers (aiosqlite, asyncpg); ``sqlite+aiosqlite:///path.db`` and ``postgresql+asyncpg://...``
may be written out.
"""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["PRESET_NAMES", "Options"]

PRESET_NAMES = ("native", "streamsource-legacy")


@attrs.frozen(kw_only=True)
class Options:
    """Options of the ``sql`` backend.

    * ``url`` — the database (SQLAlchemy URL; its password never appears in errors or logs).
    * ``schema`` — the preset mapping: ``native`` (table ``streams``, one snake_case column per
      stream field) or ``streamsource-legacy`` (the legacy Node app's ``"Streams"`` table).
    * ``table`` — the table name, over the preset's.
    * ``columns`` — ``{ field = "column" }`` over the preset's; ``field = false`` says the table
      has no column for that field (it is then not stored). Besides the stream fields, ``id``,
      ``is_archived`` (the archive flag), ``user_id`` and ``user_email`` (the owner) may be mapped.
    * ``values`` — stored spellings of enum values over the preset's, e.g.
      ``{ status = { live = "L", offline = "O", unknown = "U" } }``.
    * ``create_schema`` — create the mapped table at ``open()`` when it does not exist. An
      existing table is never altered.
    * ``delete`` — ``hard`` (default) deletes the row; ``soft`` sets the archive flag, and
      archived rows are then invisible through this backend (as the legacy app hid them).
    * ``busy_timeout_ms`` — how long a SQLite connection waits for a lock before giving up.
    * ``bulk_batch_size`` — rows per INSERT statement in ``bulk_import``.
    """

    url: str
    schema: Literal["native", "streamsource-legacy"] = "native"
    table: str | None = None
    columns: dict[str, str | bool] = attrs.field(factory=dict)
    values: dict[str, dict[str, str]] = attrs.field(factory=dict)
    create_schema: bool = False
    delete: Literal["hard", "soft"] = "hard"
    busy_timeout_ms: int = 30_000
    bulk_batch_size: int = 500

    def __repr__(self) -> str:
        # The URL may carry a password: never show it.
        return f"Options(schema={self.schema!r}, table={self.table!r}, delete={self.delete!r})"
