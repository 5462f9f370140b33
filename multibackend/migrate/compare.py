"""Comparing one entity across two backends, after canonicalization (verify and shadow reads).

Which fields: those both backends store (``A.fields & B.fields``) minus ``updated_at`` (every
backend stamps its own) and ``id`` (ids differ by design; the id map links them).

Canonical form of a value, so that spelling differences between backends are not reported:

* enums: their lower-case API key (``'Live'`` and ``live`` are equal);
* timestamps: UTC, truncated to the **second** (the legacy table and the API keep different
  sub-second precision; a difference under a second is not a difference);
* text: surrounding whitespace stripped, and an empty string is the same as no value;
* ``is_pinned``: a missing value is false;
* ``posted_by``: no value on one side is not a difference — StreamSource fills a blank
  ``posted_by`` with the owner's email (contract §2), so a legacy row without one reads back with
  the service account's email. Two different values are a difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import attrs

from multibackend.model import Kind, Orientation, Platform, Stream, StreamStatus

__all__ = [
    "FieldDiff",
    "canonical",
    "canonical_fields",
    "canonical_row",
    "compared_fields",
    "diff_streams",
]

_IGNORED = frozenset({"updated_at", "id", "user"})
# Fields a backend fills with its own default when they are blank.
_DEFAULTED = frozenset({"posted_by"})


def compared_fields(a_fields: Iterable[str], b_fields: Iterable[str]) -> tuple[str, ...]:
    """The fields verify compares between two backends, sorted."""
    return tuple(sorted((set(a_fields) & set(b_fields)) - _IGNORED))


def _enum(value: Any) -> Any:
    if value is None:
        return None
    text = str(value.value if isinstance(value, Enum) else value).strip().lower()
    return text or None


def _time(value: Any) -> Any:
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Epoch seconds, truncated: compared as ints, shown as ISO 8601 in reports.
    return math.floor(value.timestamp())


def _flag(value: Any) -> bool:
    return bool(value)


def _text(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "status": _enum,
    "platform": _enum,
    "orientation": _enum,
    "kind": _enum,
    "created_at": _time,
    "updated_at": _time,
    "last_checked_at": _time,
    "last_live_at": _time,
    "is_pinned": _flag,
}
_TIMES = frozenset(k for k, v in _CONVERTERS.items() if v is _time)


def canonical(name: str, value: Any) -> Any:
    """One field's value in canonical form (JSON-friendly: str, int, bool, None)."""
    return _CONVERTERS.get(name, _text)(value)


def canonical_fields(
    stream: Stream, fields: Iterable[str] | Sequence[tuple[str, Callable[[Any], Any]]]
) -> dict[str, Any]:
    """The canonical values of ``fields`` of ``stream`` (field names, or the pairs
    :func:`converters` prepared once for many streams)."""
    pairs = (
        fields
        if isinstance(fields, list) and fields and isinstance(fields[0], tuple)
        else (
            converters(fields)  # type: ignore[arg-type]
        )
    )
    return {name: convert(getattr(stream, name, None)) for name, convert in pairs}


def converters(fields: Iterable[str]) -> list[tuple[str, Callable[[Any], Any]]]:
    """(field, canonicalizer) pairs for ``fields``, to canonicalize many streams quickly."""
    return [(name, _CONVERTERS.get(name, _text)) for name in fields]


# Canonical spellings of every enum member, by identity: a member is a singleton, so no other
# live object shares its id(); anything else (text, unknown values) goes through ``_enum``.
_ENUM_MEMBERS: dict[int, Any] = {
    id(member): _enum(member)
    for cls in (StreamStatus, Platform, Orientation, Kind)
    for member in cls
}
_STREAM_ATTRS = frozenset(a.name for a in attrs.fields(Stream))


def _field_code(index: int, name: str) -> list[str]:
    """Statements computing ``v{index}``, the canonical value of ``name`` — the same result as
    ``canonical(name, value)``, inlined so that a whole stream costs one call. Exact types are
    tested first (``__class__ is``), None skips everything: most values take one test."""
    v = f"v{index}"
    read = f"s.{name}" if name in _STREAM_ATTRS else f"getattr(s, {name!r}, None)"
    convert = _CONVERTERS.get(name, _text)
    if convert is _enum:
        return [
            f"{v} = {read}",
            f"if {v} is not None:",
            f"    {v} = _members_get(_id({v})) or _enum({v})",
        ]
    if convert is _time:
        return [
            f"{v} = {read}",
            f"if {v} is not None:",
            f"    if {v}.__class__ is _datetime and {v}.tzinfo is not None:",
            f"        {v} = _floor({v}.timestamp())",
            "    else:",
            f"        {v} = _time({v})",
        ]
    if convert is _flag:
        return [f"{v} = True if {read} else False"]
    if convert is _text:
        return [
            f"{v} = {read}",
            f"if {v} is not None and ({v}.__class__ is _str or _isinstance({v}, _str)):",
            f"    {v} = {v}.strip() or None",
        ]
    raise AssertionError(f"no inlined form for the converter of {name!r}")  # pragma: no cover


def canonical_row(fields: Sequence[str]) -> Callable[[Stream], tuple[Any, ...]]:
    """A function giving the canonical values of ``fields`` of a stream as a tuple (in the order
    of ``fields``): ``dict(zip(fields, row(s))) == canonical_fields(s, fields)``.

    Verify canonicalizes every stream of both backends; this compiles the per-field converters
    into one function so that a stream costs one call instead of one call per field (the
    helpers it calls are bound as default arguments: local look-ups, not global ones).
    """
    names = list(fields)
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"not a field name: {name!r}")
    body = [
        "def row(s, _members_get=_members.get, _id=id, _enum=_enum, _time=_time,"
        " _floor=_floor, _datetime=_datetime, _str=str, _isinstance=isinstance):"
    ]
    for index, name in enumerate(names):
        body.extend("    " + line for line in _field_code(index, name))
    body.append("    return (" + "".join(f"v{i}, " for i in range(len(names))) + ")")
    namespace: dict[str, Any] = {
        "_members": _ENUM_MEMBERS,
        "_enum": _enum,
        "_time": _time,
        "_floor": math.floor,
        "_datetime": datetime,
    }
    exec(compile("\n".join(body), "<multibackend canonical row>", "exec"), namespace)
    row: Callable[[Stream], tuple[Any, ...]] = namespace["row"]
    return row


def shown(name: str, value: Any) -> Any:
    """A canonical value as a person reads it (timestamps as ISO 8601 UTC)."""
    if name in _TIMES and isinstance(value, int):
        return datetime.fromtimestamp(value, UTC).isoformat()
    return value


@attrs.frozen(kw_only=True)
class FieldDiff:
    """One field that differs: the canonical value on each side."""

    field: str
    a: Any
    b: Any


def diff_values(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[FieldDiff]:
    """Differences between two canonical field mappings (keys of ``a``)."""
    out = []
    for k in a:
        left, right = a.get(k), b.get(k)
        if left == right or (k in _DEFAULTED and (left is None or right is None)):
            continue
        out.append(FieldDiff(field=k, a=shown(k, left), b=shown(k, right)))
    return out


def diff_streams(a: Stream, b: Stream, fields: Iterable[str]) -> list[FieldDiff]:
    """Differences between ``a`` and ``b`` over ``fields`` after canonicalization."""
    names = list(fields)
    return diff_values(canonical_fields(a, names), canonical_fields(b, names))
