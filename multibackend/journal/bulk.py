"""Journal operations for many entities at once: what a backfill does per chunk.

The backfill (:mod:`multibackend.migrate.backfill`) handles thousands of streams per second;
per-row work that the manager's write path can afford (a snapshot built by the general
:func:`~multibackend.journal.snapshot.build_snapshot`) is most of its cost there. The operations
here do the same work for a whole chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from enum import Enum

from multibackend.journal.snapshot import Snapshot
from multibackend.model import PRESERVABLE_TIMESTAMPS, WRITABLE_FIELDS, Stream

__all__ = ["snapshot_builder"]

_SNAPSHOT_FIELDS = WRITABLE_FIELDS | PRESERVABLE_TIMESTAMPS


def snapshot_builder(
    primary_fields: Iterable[str], target_fields: Iterable[str]
) -> Callable[[Stream], Snapshot]:
    """A function equal to ``build_snapshot(stream, primary_fields=..., target_fields=...,
    given={})`` (a stream read from the primary, no write carrying extra fields), with the
    field choice made once instead of per stream."""
    primary = set(primary_fields)
    always: list[str] = []
    if_present: list[str] = []
    for name in target_fields:
        if name not in _SNAPSHOT_FIELDS:
            continue
        if name in primary:
            always.append(name)
        elif name in PRESERVABLE_TIMESTAMPS:
            if_present.append(name)  # a server timestamp the primary reported
    # Only what a stream can hold: a datetime, an enum, or a plain JSON value.
    dt, en = datetime, Enum

    def build(stream: Stream) -> Snapshot:
        out: Snapshot = {}
        for name in always:
            value = getattr(stream, name)
            if isinstance(value, dt):
                value = value.isoformat()
            elif isinstance(value, en):
                value = value.value
            out[name] = [value]
        for name in if_present:
            value = getattr(stream, name)
            if value is not None:
                out[name] = [value.isoformat() if isinstance(value, dt) else value]
        return out

    return build
