"""Batched journal operations (multibackend.journal.bulk) do what their per-row originals do."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from multibackend.journal.bulk import snapshot_builder
from multibackend.journal.snapshot import build_snapshot
from multibackend.model import STREAM_FIELDS, Kind, Orientation, Platform, Stream, StreamStatus

_WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _streams() -> list[Stream]:
    return [
        Stream(id=1, source="s", link="https://x.test/1"),
        Stream(
            id="a-2",
            source=None,
            link="x.test/2",
            status=StreamStatus.LIVE,
            is_pinned=True,
            platform=Platform.TWITCH,
            orientation=Orientation.VERTICAL,
            kind=Kind.VIDEO,
            city=" Austin ",
            state="TX",
            notes="n",
            title="t",
            posted_by="p",
            last_checked_at=_WHEN,
            last_live_at=_WHEN,
            created_at=_WHEN,
            updated_at=_WHEN,
        ),
    ]


@pytest.mark.parametrize(
    ("primary", "target"),
    [
        (set(STREAM_FIELDS), set(STREAM_FIELDS)),
        # A legacy primary without notes and server timestamps; a target storing everything.
        (set(STREAM_FIELDS) - {"notes", "created_at", "last_checked_at"}, set(STREAM_FIELDS)),
        # A target storing less than the primary.
        (set(STREAM_FIELDS), {"source", "link", "title", "created_at", "status"}),
    ],
)
def test_snapshot_builder_equals_build_snapshot(primary: set[str], target: set[str]) -> None:
    build = snapshot_builder(primary, target)
    for stream in _streams():
        expected = build_snapshot(stream, primary_fields=primary, target_fields=target, given={})
        got = build(stream)
        assert got == expected
        # An enum member equals its text, but the snapshot must hold plain JSON values.
        assert {k: type(v[0]) for k, v in got.items()} == {
            k: type(v[0]) for k, v in expected.items()
        }
