"""Compare what two backends hold, through an id map: the check behind chaos and end-to-end tests.

::

    differences = await compare_backends(primary, copy, {primary_id: copy_id, ...})
    assert differences == [], "\\n".join(map(str, differences))

The id map says which stream of ``b`` is the copy of which stream of ``a``; it should cover every
stream ``a`` holds. Reported (:class:`Difference` ``kind``):

* ``missing`` — a stream of ``a`` with no copy: unmapped, or mapped to an id ``b`` does not hold;
* ``unexpected`` — a stream of ``b`` that is no stream's copy (a duplicate, or an orphan);
* ``shared`` — one stream of ``b`` mapped as the copy of several streams of ``a``;
* ``stale`` — an id map entry for a stream ``a`` does not hold (deleted on ``a``, still mapped);
* ``mismatch`` — a field both backends store has different values (one difference per field).

Compared fields default to those both backends store, minus the ones each backend stamps itself
(:data:`STAMPED_FIELDS`: creation and update times, status check times, and ``posted_by`` which
StreamSource sets to the authenticated user). Text is compared as stored; enums by value.

The migration toolkit's ``verify`` does this at scale; this helper keeps to one simple shape,
(backend A, backend B, id map) -> list of differences, so tests can swap it later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any, Final, Literal

import attrs

from multibackend.backend import StreamBackend
from multibackend.model import Stream, StreamId, StreamQuery

__all__ = ["STAMPED_FIELDS", "Difference", "compare_backends", "compared_fields"]

#: Fields a backend may set by itself, so two faithful copies can differ in them.
STAMPED_FIELDS: Final = frozenset(
    {"created_at", "updated_at", "last_checked_at", "last_live_at", "posted_by"}
)

DifferenceKind = Literal["missing", "unexpected", "shared", "stale", "mismatch"]


@attrs.frozen(kw_only=True)
class Difference:
    """One way ``b`` differs from ``a``."""

    kind: DifferenceKind
    a_id: StreamId | None = None
    b_id: StreamId | None = None
    field: str | None = None
    a_value: Any = None
    b_value: Any = None

    def __str__(self) -> str:
        where = f"a={self.a_id!r} b={self.b_id!r}"
        if self.kind == "mismatch":
            return f"mismatch {where} {self.field}: {self.a_value!r} != {self.b_value!r}"
        return f"{self.kind} {where}"


def compared_fields(a: StreamBackend, b: StreamBackend) -> frozenset[str]:
    """The fields :func:`compare_backends` compares by default for ``a`` and ``b``."""
    return (frozenset(a.fields) & frozenset(b.fields)) - STAMPED_FIELDS


async def _all(backend: StreamBackend) -> dict[StreamId, Stream]:
    out: dict[StreamId, Stream] = {}
    async for stream in backend.iter_streams(StreamQuery()):
        out[stream.id] = stream
    return out


def _key(native_id: StreamId) -> str:
    # Ids may come back as int from one path and str from another (id maps store text).
    return str(native_id)


async def compare_backends(
    a: StreamBackend,
    b: StreamBackend,
    id_map: Mapping[StreamId, StreamId],
    *,
    fields: Collection[str] | None = None,
) -> list[Difference]:
    """Every difference between the streams of ``a`` and of ``b``, matched through ``id_map``
    (``a``'s id -> ``b``'s id). An empty list means ``b`` is a faithful copy of ``a``."""
    names = sorted(compared_fields(a, b) if fields is None else fields)
    a_streams = {_key(i): s for i, s in (await _all(a)).items()}
    b_streams = {_key(i): s for i, s in (await _all(b)).items()}
    mapping = {_key(k): _key(v) for k, v in id_map.items()}
    out: list[Difference] = []

    for a_key, b_key in sorted(mapping.items()):
        if a_key not in a_streams:
            out.append(Difference(kind="stale", a_id=a_key, b_id=b_key))
    for b_key, n in sorted(Counter(mapping.values()).items()):
        if n > 1:
            out.append(Difference(kind="shared", b_id=b_key))

    for a_key, stream in sorted(a_streams.items()):
        mapped = mapping.get(a_key)
        copy = None if mapped is None else b_streams.get(mapped)
        if copy is None:
            out.append(Difference(kind="missing", a_id=stream.id, b_id=mapped))
            continue
        for name in names:
            mine, theirs = getattr(stream, name), getattr(copy, name)
            if mine != theirs:
                out.append(
                    Difference(
                        kind="mismatch",
                        a_id=stream.id,
                        b_id=copy.id,
                        field=name,
                        a_value=mine,
                        b_value=theirs,
                    )
                )

    copies = set(mapping.values())
    for b_key, stream in sorted(b_streams.items()):
        if b_key not in copies:
            out.append(Difference(kind="unexpected", b_id=stream.id))
    return out
