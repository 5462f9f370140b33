"""The ``sql`` backend plugin: streams in a SQL table (SQLite, PostgreSQL), mapped onto an
existing schema (the legacy StreamSource ``"Streams"`` table) or its own.

The entry point ``sql`` in ``multibackend.backends`` is :class:`SqlBackend`.
"""

from multibackend_sql.backend import SqlBackend
from multibackend_sql.options import Options

__all__ = ["Options", "SqlBackend"]
