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

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import attrs

from multibackend.model import Stream

__all__ = ["FieldDiff", "canonical", "canonical_fields", "compared_fields", "diff_streams"]

_IGNORED = frozenset({"updated_at", "id", "user"})
# Fields a backend fills with its own default when they are blank.
_DEFAULTED = frozenset({"posted_by"})


def compared_fields(a_fields: Iterable[str], b_fields: Iterable[str]) -> tuple[str, ...]:
    """The fields verify compares between two backends, sorted."""
    return tuple(sorted((set(a_fields) & set(b_fields)) - _IGNORED))


def canonical(name: str, value: Any) -> Any:
    """One field's value in canonical form (JSON-friendly: str, bool, None...)."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(microsecond=0).isoformat()
    if isinstance(value, str):
        text = value.strip()
        if name in ("status", "platform", "orientation", "kind"):
            text = text.lower()
        return text or None
    if name == "is_pinned":
        return bool(value)
    return value


def canonical_fields(stream: Stream, fields: Iterable[str]) -> dict[str, Any]:
    """The canonical values of ``fields`` of ``stream``."""
    return {name: canonical(name, getattr(stream, name, None)) for name in fields}


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
        out.append(FieldDiff(field=k, a=left, b=right))
    return out


def diff_streams(a: Stream, b: Stream, fields: Iterable[str]) -> list[FieldDiff]:
    """Differences between ``a`` and ``b`` over ``fields`` after canonicalization."""
    names = list(fields)
    return diff_values(canonical_fields(a, names), canonical_fields(b, names))
