"""What goes on the wire and how answers are read: flat bodies of permitted keys only, query
strings, the server's validation sentences split into problems, lenient reads of older data."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from multibackend_streamsource.error_mapping import split_validation_message
from multibackend_streamsource.serialization import (
    PERMITTED_KEYS,
    draft_body,
    patch_body,
    query_params,
    stream_from_json,
)

from multibackend.model import (
    Kind,
    Orientation,
    Platform,
    StreamDraft,
    StreamPatch,
    StreamQuery,
    StreamStatus,
)

T = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_create_body_is_flat_with_permitted_keys_only() -> None:
    draft = StreamDraft(
        source="a",
        link="  https://example.com/a  ",
        status="Live",
        is_pinned=True,
        platform="TikTok",
        orientation=None,
        kind="web",
        posted_by="me",
        created_at=T,
        last_checked_at=T,
        last_live_at=T,
    )
    body = draft_body(draft, "ss")
    assert body == {
        "source": "a",
        "link": "https://example.com/a",
        "status": "live",
        "platform": "tiktok",
        "orientation": None,
        "kind": "web",
        "posted_by": "me",
    }
    assert set(body) <= set(PERMITTED_KEYS)
    assert "stream" not in body  # a wrapped body would be read as empty by the server


def test_update_body_sends_given_fields_and_none_clears() -> None:
    assert patch_body(StreamPatch(title=None, notes="n", is_pinned=False), "ss") == {
        "title": None,
        "notes": "n",
    }
    assert patch_body(StreamPatch(created_at=T), "ss") == {}


def test_query_string() -> None:
    query = StreamQuery(
        status="live", not_status="offline", is_pinned=False, user_id=3, sort="-created"
    )
    assert query_params(query, "ss") == {
        "page": "1",
        "per_page": "25",
        "status": "live",
        "notStatus": "offline",
        "is_pinned": "false",
        "user_id": "3",
        "sort": "-created",
    }


@pytest.mark.parametrize(
    ("message", "problems"),
    [
        (
            "Link can't be blank, Link must be a valid HTTP or HTTPS URL, Source can't be blank",
            [
                ("link", "can't be blank"),
                ("link", "must be a valid HTTP or HTTPS URL"),
                ("source", "can't be blank"),
            ],
        ),
        (
            "User couldn't be created successfully. Email has already been taken and "
            "Password is too short (minimum is 8 characters)",
            [
                ("email", "has already been taken"),
                ("password", "is too short (minimum is 8 characters)"),
            ],
        ),
        (
            "Password confirmation doesn't match Password, Posted by is odd",
            [("password_confirmation", "doesn't match Password"), ("posted_by", "is odd")],
        ),
        ("Location validation failed: City can't be blank", [("location", "City can't be blank")]),
        ("Something else happened", [(None, "Something else happened")]),
    ],
)
def test_validation_sentences_split(message: str, problems: list[tuple[str | None, str]]) -> None:
    assert split_validation_message(message) == problems


def test_reads_stored_spellings_and_guide_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    stream = stream_from_json(
        {
            "id": 5,
            "source": "x",
            "link": "https://example.com",
            "status": "Live",
            "platform": "YouTube",
            "orientation": "portrait",
            "kind": "stream",
            "created_at": "2025-06-17T12:34:56.789Z",
            "last_checked_at": "2025-06-17T12:34:56",
        }
    )
    assert stream.status is StreamStatus.LIVE
    assert stream.platform is Platform.YOUTUBE
    assert stream.orientation is Orientation.VERTICAL  # the import task's synonym
    assert stream.kind is Kind.VIDEO  # unknown: the default, and a warning says so
    assert any("'stream'" in r.getMessage() for r in caplog.records)
    assert stream.created_at == datetime(2025, 6, 17, 12, 34, 56, 789000, tzinfo=UTC)
    assert stream.last_checked_at is not None
    assert stream.last_checked_at.tzinfo is not None  # naive text is read as UTC
    assert stream.user is None
