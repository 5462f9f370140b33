"""Answers a test server cannot easily be made to send, through aioresponses: non-JSON bodies,
timeouts, Retry-After, and the retry policy around them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from multibackend_streamsource.backend import StreamSourceBackend

from multibackend.errors import (
    FeatureUnavailable,
    PermissionDenied,
    RateLimited,
    Unavailable,
    ValidationFailed,
)
from multibackend.model import StreamDraft, StreamPatch

BASE = "http://127.0.0.1:9"
STREAM_URL = re.compile(r"^http://127\.0\.0\.1:9/api/v1/streams/7$")
STREAMS_URL = f"{BASE}/api/v1/streams"

STREAM = {
    "id": 7,
    "source": "alice",
    "link": "https://example.com/a",
    "status": "live",
    "is_pinned": False,
    "created_at": "2025-06-17T12:34:56.789Z",
    "updated_at": "2025-06-17T12:34:56.789Z",
    "city": None,
    "state": None,
    "platform": "tiktok",
    "notes": None,
    "title": None,
    "last_checked_at": "2025-06-17T12:34:56.789Z",
    "last_live_at": None,
    "posted_by": "editor@example.com",
    "orientation": "vertical",
    "kind": "video",
    "user": {"id": 3, "email": "editor@example.com", "role": "editor"},
}


@pytest.fixture
async def backend(make_options: Any, token_factory: Any) -> Any:
    b = StreamSourceBackend("ss", make_options(BASE, token=token_factory(), max_retries=2))
    async with b:
        yield b


def calls(mock: Any, method: str, url: str) -> int:
    from yarl import URL

    return len(mock.requests.get((method, URL(url)), []))


async def test_html_error_page_is_unavailable_and_get_is_retried(
    backend: Any, mock_http: Any
) -> None:
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    mock_http.get(STREAM_URL, status=502, body=html, content_type="text/html", repeat=True)
    with pytest.raises(Unavailable, match="502 Bad Gateway") as caught:
        await backend.get_stream(7)
    assert caught.value.retryable
    assert calls(mock_http, "GET", f"{STREAMS_URL}/7") == 3  # first try + max_retries


async def test_transient_failure_then_success(backend: Any, mock_http: Any) -> None:
    mock_http.get(STREAM_URL, status=500, payload={"status": 500, "error": "Internal"})
    mock_http.get(STREAM_URL, payload={"stream": STREAM})
    stream = await backend.get_stream(7)
    assert stream.id == 7
    assert stream.created_at == datetime(2025, 6, 17, 12, 34, 56, 789000, tzinfo=UTC)


async def test_create_that_timed_out_is_not_retried(backend: Any, mock_http: Any) -> None:
    mock_http.post(STREAMS_URL, timeout=True, repeat=True)
    with pytest.raises(Unavailable, match="may or may not have been applied"):
        await backend.create_stream(StreamDraft(source="a", link="https://example.com/a"))
    assert calls(mock_http, "POST", STREAMS_URL) == 1


async def test_update_that_timed_out_is_retried(backend: Any, mock_http: Any) -> None:
    mock_http.patch(STREAM_URL, timeout=True)
    mock_http.patch(STREAM_URL, payload={"stream": STREAM})
    stream = await backend.update_stream(7, StreamPatch(title="t"))
    assert stream.id == 7
    assert calls(mock_http, "PATCH", f"{STREAMS_URL}/7") == 2


async def test_maintenance_is_unavailable_saying_so_and_not_hammered(
    backend: Any, mock_http: Any
) -> None:
    body = {
        "error": "The API is currently under maintenance. Please try again later.",
        "maintenance": True,
    }
    mock_http.get(STREAM_URL, status=503, payload=body, repeat=True)
    with pytest.raises(Unavailable, match="maintenance mode") as caught:
        await backend.get_stream(7)
    assert caught.value.retryable
    assert calls(mock_http, "GET", f"{STREAMS_URL}/7") == 1


async def test_403_by_message(backend: Any, mock_http: Any) -> None:
    mock_http.get(
        re.compile(r".*/analytics$"),
        status=403,
        payload={"error": "This feature is not currently available"},
    )
    with pytest.raises(FeatureUnavailable, match="feature flag"):
        await backend.analytics(7)
    mock_http.delete(
        STREAM_URL,
        status=403,
        payload={"error": "You are not authorized to perform this action"},
    )
    with pytest.raises(PermissionDenied, match="not authorized"):
        await backend.delete_stream(7)
    mock_http.delete(STREAM_URL, status=403, body="")  # ignore lists answer with no body
    with pytest.raises(PermissionDenied, match="empty body"):
        await backend.delete_stream(7)


async def test_422_is_split_into_problems(backend: Any, mock_http: Any) -> None:
    message = (
        "Link must be a valid HTTP or HTTPS URL, Source can't be blank, "
        "Source is too short (minimum is 1 character)"
    )
    mock_http.post(STREAMS_URL, status=422, payload={"error": message})
    with pytest.raises(ValidationFailed) as caught:
        await backend.create_stream(StreamDraft(source="a", link="https://example.com/a"))
    assert caught.value.problems == (
        ("link", "must be a valid HTTP or HTTPS URL"),
        ("source", "can't be blank"),
        ("source", "is too short (minimum is 1 character)"),
    )
    assert caught.value.field == "link"
    assert not caught.value.retryable


async def test_429_with_retry_after_beyond_the_wait_raises_at_once(
    make_options: Any, token_factory: Any, mock_http: Any
) -> None:
    opts = make_options(BASE, token=token_factory(), max_rate_limit_wait=1.0)
    mock_http.get(
        STREAM_URL,
        status=429,
        headers={"Retry-After": "120"},
        payload={"error": "Too many requests. Please try again later."},
        repeat=True,
    )
    async with StreamSourceBackend("ss", opts) as backend:
        before = datetime.now(UTC)
        with pytest.raises(RateLimited) as caught:
            await backend.get_stream(7)
        retry_at = caught.value.retry_at
        assert retry_at is not None
        assert 115 <= (retry_at - before).total_seconds() <= 125
        # Later calls do not even reach the server while it throttles us.
        with pytest.raises(RateLimited):
            await backend.get_stream(7)
    assert calls(mock_http, "GET", f"{STREAMS_URL}/7") == 1


async def test_ok_answer_that_is_not_json_is_unavailable(backend: Any, mock_http: Any) -> None:
    mock_http.get(STREAM_URL, status=200, body="<html>login page</html>", content_type="text/html")
    with pytest.raises(Unavailable, match="unreadable answer"):
        await backend.get_stream(7)


async def test_connection_refused_is_unavailable(make_options: Any, token_factory: Any) -> None:
    # Port 9 (discard) is closed on the test machines: the connection is refused.
    opts = make_options(BASE, token=token_factory(), max_retries=1)
    async with StreamSourceBackend("ss", opts) as backend:
        with pytest.raises(Unavailable, match="cannot connect") as caught:
            await backend.create_stream(StreamDraft(source="a", link="https://example.com/a"))
    assert caught.value.retryable
