"""The compiled canonical row verify uses equals the per-field canonical form, value by value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from multibackend.migrate.compare import canonical_fields, canonical_row, compared_fields
from multibackend.model import STREAM_FIELDS, Kind, Platform, Stream, StreamStatus

FIELDS = compared_fields(STREAM_FIELDS, STREAM_FIELDS)


def _stream(**values: Any) -> Stream:
    base: dict[str, Any] = {"id": 1, "source": "s", "link": "https://x.test"}
    base.update(values)
    return Stream(**base)


ODD = [
    {},
    {"source": "  padded  ", "city": "", "title": "   ", "notes": "\tnote\n"},
    {"status": StreamStatus.LIVE, "platform": Platform.TWITCH, "kind": Kind.VIDEO},
    # Lenient rows: enum spellings as the legacy table stores them, still readable.
    {"status": " Live ", "platform": "TWITCH", "orientation": "", "kind": None},
    {"is_pinned": None, "posted_by": " a@b.test "},
    {"is_pinned": 1, "source": None},
    {
        "created_at": datetime(2024, 5, 1, 12, 0, 0, 999_999, tzinfo=UTC),
        "last_live_at": datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
        "last_checked_at": datetime(2024, 5, 1, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
    },
]


@pytest.mark.parametrize("values", ODD)
def test_canonical_row_equals_canonical_fields(values: dict[str, Any]) -> None:
    stream = _stream(**values)
    row = canonical_row(FIELDS)(stream)
    assert dict(zip(FIELDS, row, strict=True)) == canonical_fields(stream, FIELDS)


def test_canonical_row_keeps_the_order_and_subset_asked_for() -> None:
    stream = _stream(title=" t ", status=StreamStatus.OFFLINE, city="c")
    assert canonical_row(("title", "status", "city"))(stream) == ("t", "offline", "c")
    # Sub-second differences vanish, whole seconds do not.
    at = datetime(2024, 1, 1, tzinfo=UTC)
    row = canonical_row(("created_at",))
    assert row(_stream(created_at=at)) == row(_stream(created_at=at + timedelta(microseconds=9)))
    assert row(_stream(created_at=at)) != row(_stream(created_at=at + timedelta(seconds=1)))


def test_canonical_row_refuses_a_name_that_is_no_field_name() -> None:
    with pytest.raises(ValueError, match="not a field name"):
        canonical_row(("title); import os; (",))
