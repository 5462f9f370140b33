"""Bad input fails in the model, before any backend is called, naming the field and the rule;
and every error in the tree says whether retrying can help."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from multibackend import (
    UNSET,
    AuthenticationFailed,
    BackendError,
    BaseBackend,
    ConfigError,
    Conflict,
    FeatureUnavailable,
    MultibackendError,
    NotFound,
    Page,
    PermissionDenied,
    PluginError,
    RateLimited,
    Stream,
    StreamDraft,
    StreamPatch,
    StreamQuery,
    Unavailable,
    ValidationFailed,
)


class RecordingBackend(BaseBackend):
    """Answers every call with a fixed stream and records it, to prove calls did (not) happen."""

    def __init__(self) -> None:
        super().__init__("recording")
        self.calls: list[str] = []
        self.stream = Stream(id=1, source="s", link="https://example.com/s")

    async def create_stream(self, draft: StreamDraft) -> Stream:
        self.calls.append("create_stream")
        return self.stream

    async def get_stream(self, id: Any) -> Stream:
        self.calls.append("get_stream")
        return self.stream

    async def update_stream(self, id: Any, patch: StreamPatch) -> Stream:
        self.calls.append("update_stream")
        return self.stream

    async def delete_stream(self, id: Any) -> None:
        self.calls.append("delete_stream")

    async def list_streams(self, query: StreamQuery) -> Page[Stream]:
        self.calls.append("list_streams")
        return Page.build([self.stream], query, 1)


BAD_INPUT = [
    (
        lambda: StreamDraft(source="s", link="https://x.example", status="streaming"),
        "status",
        "enum",
    ),
    (
        lambda: StreamDraft(source="s", link="https://x.example", platform="myspace"),
        "platform",
        "enum",
    ),
    (lambda: StreamDraft(source="s", link="https://x.example", kind="LIVE"), "kind", "enum"),
    (lambda: StreamDraft(source="s", link="ftp://x.example"), "link", "http_url"),
    (lambda: StreamDraft(source="s", link="www.example.com/live"), "link", "http_url"),
    (lambda: StreamDraft(source="s", link="  "), "link", "required"),
    (lambda: StreamDraft(source="", link="https://x.example"), "source", "required"),
    (lambda: StreamDraft(source="x" * 256, link="https://x.example"), "source", "max_length"),
    (lambda: StreamPatch(link="example.com"), "link", "http_url"),
    (lambda: StreamPatch(status=None), "status", "required"),
    (lambda: StreamPatch(orientation="diagonal"), "orientation", "enum"),
    (lambda: StreamQuery(per_page=0), "per_page", "range"),
    (lambda: StreamQuery(per_page=101), "per_page", "range"),
    (lambda: StreamQuery(page=0), "page", "min"),
    (lambda: StreamQuery(status="gone"), "status", "enum"),
    (lambda: StreamQuery(not_status="gone"), "not_status", "enum"),
    (lambda: StreamQuery(sort="newest"), "sort", "enum"),
]


async def attempt(build: Any, backend: RecordingBackend) -> None:
    """Build the input and hand it to the backend, as a caller would."""
    value = build()
    if isinstance(value, StreamQuery):
        await backend.list_streams(value)
    elif isinstance(value, StreamDraft):
        await backend.create_stream(value)
    else:
        await backend.update_stream(1, value)


@pytest.mark.parametrize(("build", "field", "rule"), BAD_INPUT)
async def test_bad_input_fails_before_the_backend_is_called(
    build: Any, field: str, rule: str
) -> None:
    backend = RecordingBackend()
    async with backend:
        with pytest.raises(ValidationFailed) as info:
            await attempt(build, backend)
    assert backend.calls == []
    err = info.value
    assert err.field == field
    assert err.rule == rule
    assert str(err).startswith(f"{field}: ")
    assert err.backend is None
    assert err.problems == ((field, str(err)),)


async def test_good_input_does_reach_the_backend() -> None:
    # The control for the test above: the recorder does record.
    backend = RecordingBackend()
    async with backend:
        page = await backend.list_streams(StreamQuery(per_page=100, page=1))
        await backend.create_stream(StreamDraft(source="s", link="http://x.example"))
    assert backend.calls == ["list_streams", "create_stream"]
    assert page.total_pages == 1


def test_boundaries_that_are_allowed() -> None:
    assert StreamQuery(per_page=1).per_page == 1
    assert StreamQuery(per_page=100).per_page == 100
    assert StreamDraft(source="x" * 255, link=" https://x.example ").link == "https://x.example"
    # The server's stored spelling is accepted, as the server accepts it.
    assert StreamDraft(source="s", link="https://x.example", status="Live").status == "live"


def test_patch_tells_unset_from_none() -> None:
    patch = StreamPatch(city=None, title="t")
    assert patch.given() == {"city": None, "title": "t"}
    assert patch.state is UNSET
    assert StreamPatch().is_empty()


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationFailed) as info:
        StreamDraft(source="s", link="https://x.example", created_at=datetime(2026, 1, 1))
    assert info.value.field == "created_at"
    assert StreamDraft(
        source="s", link="https://x.example", created_at=datetime(2026, 1, 1, tzinfo=UTC)
    ).created_at == datetime(2026, 1, 1, tzinfo=UTC)


# --- the error tree ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ConfigError("x", key="a.b"), False),
        (PluginError("x", plugin="p"), False),
        (NotFound(backend="b", id=3), False),
        (ValidationFailed("x", field="f", backend="b"), False),
        (AuthenticationFailed("x", backend="b"), False),
        (PermissionDenied("x", backend="b"), False),
        (FeatureUnavailable("x", backend="b"), False),
        (Conflict("x", backend="b"), False),
        (RateLimited(backend="b", retry_at=datetime.now(UTC) + timedelta(seconds=5)), True),
        (Unavailable("x", backend="b"), True),
    ],
)
def test_retryable_flags(error: MultibackendError, retryable: bool) -> None:
    assert error.retryable is retryable
    assert isinstance(error, MultibackendError)


def test_tree_shape() -> None:
    for cls in (
        NotFound,
        ValidationFailed,
        AuthenticationFailed,
        PermissionDenied,
        FeatureUnavailable,
        Conflict,
        RateLimited,
        Unavailable,
    ):
        assert issubclass(cls, BackendError)
    for cls in (ConfigError, PluginError, BackendError):
        assert cls.__bases__ == (MultibackendError,)


def test_backend_errors_carry_the_backend_name() -> None:
    err = Unavailable("connection refused", backend="legacy")
    assert err.backend == "legacy"
    assert str(err) == "backend 'legacy': connection refused"
    assert err.detail == "connection refused"
    assert ConfigError("unknown option", key="backends.x.y").key == "backends.x.y"
    assert str(ConfigError("unknown option", key="backends.x.y")) == "backends.x.y: unknown option"


def test_rate_limited_carries_retry_at() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    assert RateLimited(retry_at=when, backend="ss").retry_at == when
    assert RateLimited().retry_at is None


async def test_optional_operations_raise_feature_unavailable() -> None:
    backend = RecordingBackend()
    with pytest.raises(FeatureUnavailable) as info:
        await backend.set_pinned(1, True)
    assert info.value.backend == "recording"
    assert info.value.retryable is False
    assert "pin" in str(info.value)
