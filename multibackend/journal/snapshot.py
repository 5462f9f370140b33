"""Snapshots: the state of an entity's fields as a target should hold them, as JSON.

A snapshot maps field names to one-element lists (``{"city": ["Austin"], "notes": [null]}``).
The list wrapper keeps an explicit null distinct from "not given" through the journal's JSON
merge (SQLite's ``json_patch`` deletes keys whose new value is null; a list is replaced whole),
so a later write that clears a field still clears it on the target.

Which fields a target's snapshot carries (DESIGN.md §5):

* every field the target stores that the primary stores, from the primary's answer (its values
  are authoritative, including the status side-effect timestamps);
* server-managed timestamps the primary reported (``created_at``...), when the target stores them;
* every other field the target stores that the write itself gave — so a field the primary
  cannot hold (the legacy table has no ``notes``) still reaches a target that can.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from multibackend.model import (
    PRESERVABLE_TIMESTAMPS,
    WRITABLE_FIELDS,
    Stream,
    StreamDraft,
    StreamPatch,
)

__all__ = [
    "Snapshot",
    "build_snapshot",
    "decode_snapshot",
    "draft_from_snapshot",
    "encode_fields",
    "patch_from_snapshot",
]

Snapshot = dict[str, list[Any]]

_SNAPSHOT_FIELDS = WRITABLE_FIELDS | PRESERVABLE_TIMESTAMPS


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _encode(value: object) -> object:
    if type(value) in _PLAIN:  # most values: no isinstance checks (an Enum's is slow)
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def _decode(name: str, value: Any) -> Any:
    if value is not None and name in PRESERVABLE_TIMESTAMPS:
        return datetime.fromisoformat(value)
    return value


def encode_fields(values: Mapping[str, Any]) -> Snapshot:
    """Wrap plain field values (enums, datetimes allowed) into snapshot form."""
    return {name: [_encode(value)] for name, value in values.items() if name in _SNAPSHOT_FIELDS}


def build_snapshot(
    stream: Stream,
    *,
    primary_fields: Iterable[str],
    target_fields: Iterable[str],
    given: Mapping[str, Any],
) -> Snapshot:
    """The snapshot of ``stream`` for a target storing ``target_fields`` (see module docstring).

    ``given`` holds the fields the write itself carried (``StreamDraft.given()`` or
    ``StreamPatch.given()``).
    """
    out: Snapshot = {}
    for name, kind in _plan(frozenset(primary_fields), frozenset(target_fields)):
        if kind is _FROM_STREAM:
            out[name] = [_encode(getattr(stream, name))]
            continue
        if kind is _STAMP:
            value = getattr(stream, name)
            if value is not None:
                out[name] = [_encode(value)]
                continue
        if name in given:
            out[name] = [_encode(given[name])]
    return out


_FROM_STREAM = "stream"  # the primary stores it: the primary's answer
_STAMP = "stamp"  # a server timestamp the primary does not store: the answer's if it has one
_GIVEN = "given"  # otherwise: what the write gave, if it gave it


@functools.lru_cache(maxsize=256)
def _plan(primary: frozenset[str], target: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """Where each snapshot field of a target comes from, per (primary, target) field sets
    (worked out once: it was most of the snapshot's cost)."""
    plan = []
    for name in target:
        if name not in _SNAPSHOT_FIELDS:
            continue
        if name in primary:
            plan.append((name, _FROM_STREAM))
        elif name in PRESERVABLE_TIMESTAMPS:
            plan.append((name, _STAMP))
        else:
            plan.append((name, _GIVEN))
    return tuple(plan)


def decode_snapshot(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """Plain field values from a snapshot (datetimes parsed; enums stay as their keys)."""
    return {name: _decode(name, wrapped[0]) for name, wrapped in snapshot.items()}


def draft_from_snapshot(snapshot: Mapping[str, Any]) -> StreamDraft:
    """A draft that creates the entity on a target. Raises ValidationFailed for data that
    breaks today's input rules (the journal parks such entries with the reason)."""
    return StreamDraft(**decode_snapshot(snapshot))


def patch_from_snapshot(snapshot: Mapping[str, Any]) -> StreamPatch:
    """A patch that brings an existing copy on a target to the snapshot's state."""
    return StreamPatch(**decode_snapshot(snapshot))
