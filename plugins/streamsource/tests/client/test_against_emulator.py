"""The client over real HTTP against the emulator: requests, parsing, auth, errors, capabilities."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import attrs
import pytest
from multibackend_streamsource.backend import StreamSourceBackend

from multibackend.backend import Capability
from multibackend.errors import (
    AuthenticationFailed,
    BackendError,
    FeatureUnavailable,
    NotFound,
    PermissionDenied,
    Unavailable,
    ValidationFailed,
)
from multibackend.model import (
    WRITABLE_FIELDS,
    Kind,
    Orientation,
    Platform,
    StreamDraft,
    StreamPatch,
    StreamQuery,
    StreamStatus,
)

EDITOR = "editor@example.com"
PASSWORD = "Secret-Passw0rd"


def draft(n: int = 1, **kw: Any) -> StreamDraft:
    return StreamDraft(source=f"streamer{n}", link=f"https://example.com/live/{n}", **kw)


# --- basics ----------------------------------------------------------------------------------


def test_entry_point_and_fields() -> None:
    (ep,) = importlib.metadata.entry_points(group="multibackend.backends", name="streamsource")
    assert ep.load() is StreamSourceBackend
    assert StreamSourceBackend.fields == WRITABLE_FIELDS
    assert "is_pinned" in StreamSourceBackend.fields
    for managed in ("last_checked_at", "last_live_at", "created_at", "updated_at", "user"):
        assert managed not in StreamSourceBackend.fields
    assert {
        Capability.PIN,
        Capability.EXPORT,
        Capability.BULK_IMPORT,
        Capability.ANALYTICS,
        Capability.HEALTH,
    } == StreamSourceBackend.capabilities


async def test_create_parses_everything_and_ignores_preserved_timestamps(backend: Any) -> None:
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    created = await backend.create_stream(
        draft(
            status="live",
            platform="tiktok",
            orientation="vertical",
            kind="web",
            city="Austin",
            state="TX",
            notes="n",
            title="t",
            created_at=long_ago,
            last_live_at=long_ago,
        )
    )
    assert isinstance(created.id, int)
    assert created.status is StreamStatus.LIVE
    assert created.platform is Platform.TIKTOK
    assert created.orientation is Orientation.VERTICAL
    assert created.kind is Kind.WEB
    assert (created.city, created.state, created.notes, created.title) == ("Austin", "TX", "n", "t")
    assert created.posted_by == EDITOR  # the server's default
    assert created.user is not None
    assert created.user.email == EDITOR
    assert created.user.role == "editor"
    # The server stamps its own times; the draft's preserved timestamps are not sent.
    now = datetime.now(UTC)
    for stamp in (created.created_at, created.last_live_at, created.last_checked_at):
        assert stamp is not None
        assert stamp.tzinfo is not None
        assert abs(now - stamp) < timedelta(minutes=1)
    assert await backend.get_stream(created.id) == created
    assert backend.dialect == "current"


async def test_pinning_goes_through_the_pin_endpoints(backend: Any) -> None:
    pinned = await backend.create_stream(draft(1, is_pinned=True))
    assert pinned.is_pinned is True
    plain = await backend.create_stream(draft(2))
    assert plain.is_pinned is False
    # Pinned first in the default order.
    page = await backend.list_streams(StreamQuery())
    assert [s.id for s in page.items] == [pinned.id, plain.id]
    updated = await backend.update_stream(pinned.id, StreamPatch(title="x", is_pinned=False))
    assert (updated.title, updated.is_pinned) == ("x", False)
    only_pin = await backend.update_stream(plain.id, StreamPatch(is_pinned=True))
    assert only_pin.is_pinned is True
    assert (await backend.set_pinned(plain.id, False)).is_pinned is False


async def test_update_clears_and_delete_removes(backend: Any) -> None:
    s = await backend.create_stream(draft(platform="youtube", notes="keep?"))
    updated = await backend.update_stream(s.id, StreamPatch(platform=None, notes=None))
    assert updated.platform is None
    assert updated.notes is None
    assert await backend.update_stream(s.id, StreamPatch()) == updated
    await backend.delete_stream(s.id)
    with pytest.raises(NotFound) as caught:
        await backend.get_stream(s.id)
    assert caught.value.id == s.id
    with pytest.raises(NotFound):
        await backend.delete_stream(s.id)
    with pytest.raises(NotFound):
        await backend.get_stream("not-an-id")


async def test_list_and_iter(backend: Any, emulator: Any) -> None:
    ids: list[int] = []
    for i in range(7):
        kw = {"status": "live"} if i % 2 else {}
        ids.append((await backend.create_stream(draft(i, **kw))).id)
    page = await backend.list_streams(StreamQuery(per_page=3, page=2, sort="created"))
    assert [s.id for s in page.items] == ids[3:6]
    assert (page.total_count, page.total_pages, page.per_page, page.page) == (7, 3, 3, 2)
    live = await backend.list_streams(StreamQuery(status="live"))
    assert {s.id for s in live.items} == set(ids[1::2])

    walker = StreamSourceBackend("walk", attrs.evolve(backend.options, per_page=3))
    async with walker:
        walked = [s.id async for s in walker.iter_streams()]
        assert walked == ids
        not_live = [s.id async for s in walker.iter_streams(StreamQuery(not_status="live"))]
        assert not_live == ids[0::2]

    owner = emulator.user(EDITOR).id
    mine = await backend.list_streams(StreamQuery(user_id=owner, per_page=100))
    assert len(mine.items) == 7
    nobody = await backend.list_streams(StreamQuery(user_id=999_999))
    assert nobody.items == ()
    assert nobody.total_count == 0


# --- checks before sending -------------------------------------------------------------------


async def test_bad_enum_and_page_are_never_sent(backend: Any, emulator: Any) -> None:
    bad = draft()
    object.__setattr__(bad, "status", "bogus")  # slips past the model's own check
    before = emulator.counters().requests
    with pytest.raises(ValidationFailed, match="would answer 500") as caught:
        await backend.create_stream(bad)
    assert caught.value.field == "status"
    query = StreamQuery()
    object.__setattr__(query, "per_page", 0)
    with pytest.raises(ValidationFailed) as caught_page:
        await backend.list_streams(query)
    assert caught_page.value.field == "per_page"
    patch = StreamPatch()
    object.__setattr__(patch, "kind", "stream")  # the guide's example value
    with pytest.raises(ValidationFailed):
        await backend.update_stream(1, patch)
    assert emulator.counters().requests == before
    assert emulator.streams() == []


async def test_server_validation_is_split_into_problems(backend: Any, emulator: Any) -> None:
    await emulator.set_flag("location_validation", "all")
    with pytest.raises(ValidationFailed) as caught:
        await backend.create_stream(draft(city="Atlantis"))
    assert caught.value.problems[0][0] == "city"
    assert "not a recognized city" in caught.value.problems[0][1]


# --- auth ------------------------------------------------------------------------------------


async def test_single_flight_login_for_100_concurrent_requests(
    emulator: Any, make_options: Any, token_factory: Any
) -> None:
    """100 requests meet an expired token: exactly one login, 100 answers."""
    setup = StreamSourceBackend("setup", make_options(emulator.base_url))
    async with setup:
        s = await setup.create_stream(draft())
    expired = token_factory(lifetime=-60)
    opts = make_options(emulator.base_url, token=expired, email=EDITOR, password=PASSWORD)
    emulator.reset_counters()
    async with StreamSourceBackend("ss", opts) as backend:
        got = await asyncio.gather(*(backend.get_stream(s.id) for _ in range(100)))
        assert backend.auth.logins == 1
    assert {g.id for g in got} == {s.id}
    counters = emulator.counters()
    assert counters.requests == 101  # one login, one hundred reads, no 401
    assert 401 not in counters.statuses


async def test_revoked_token_means_one_relogin_and_one_replay(backend: Any, emulator: Any) -> None:
    s = await backend.create_stream(draft())
    token = await backend.auth.bearer()
    async with (
        aiohttp.ClientSession() as http,
        http.delete(
            emulator.base_url + "/api/v1/logout", headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        assert resp.status == 200
    emulator.reset_counters()
    assert (await backend.get_stream(s.id)).id == s.id
    assert backend.auth.logins == 2
    counters = emulator.counters()
    assert counters.statuses.get(401) == 1
    assert counters.requests == 3  # refused read, login, replayed read


async def test_second_401_after_relogin_is_authentication_failed(
    backend: Any, emulator: Any
) -> None:
    s = await backend.create_stream(draft())
    emulator.fail_next(
        5, status=401, path=f"/api/v1/streams/{s.id}", body={"error": "Unauthorized"}
    )
    emulator.reset_counters()
    with pytest.raises(AuthenticationFailed, match="fresh token too"):
        await backend.get_stream(s.id)
    assert emulator.counters().requests == 3  # read, login, one replay: no more
    assert backend.auth.logins == 2


async def test_token_only_mode(emulator: Any, make_options: Any) -> None:
    token = emulator.token_for(EDITOR)
    opts = make_options(emulator.base_url, token=token)
    async with StreamSourceBackend("svc", opts) as backend:
        s = await backend.create_stream(draft())
        assert (await backend.get_stream(s.id)).id == s.id
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.delete(emulator.base_url + "/api/v1/logout", headers=headers):
                pass
        with pytest.raises(AuthenticationFailed, match="no email/password") as caught:
            await backend.get_stream(s.id)
        assert token not in str(caught.value)
        assert backend.auth.logins == 0


async def test_wrong_password(emulator: Any, make_options: Any) -> None:
    opts = make_options(emulator.base_url, password="Not-The-Passw0rd")
    async with StreamSourceBackend("ss", opts) as backend:
        with pytest.raises(AuthenticationFailed, match="Invalid email or password") as caught:
            await backend.list_streams(StreamQuery())
    assert "Not-The-Passw0rd" not in str(caught.value)


async def test_signup_copes_with_the_500_after_create(emulator: Any, make_options: Any) -> None:
    opts = make_options(emulator.base_url, email="new@example.com", password="Fresh-Passw0rd")
    async with StreamSourceBackend("ss", opts) as backend:
        user = await backend.signup()
        assert user is not None
        assert user.email == "new@example.com"
        assert user.role == "default"
        # A default user can read, not write.
        assert (await backend.list_streams(StreamQuery())).items == ()
        with pytest.raises(PermissionDenied, match="editor or admin"):
            await backend.create_stream(draft())
        with pytest.raises(ValidationFailed) as caught:
            await backend.signup()  # taken now
        assert ("email", "has already been taken") in caught.value.problems
        with pytest.raises(ValidationFailed) as weak:
            await backend.signup("weak@example.com", "short")
        assert {f for f, _ in weak.value.problems} == {"password"}
    assert emulator.user("new@example.com") is not None
    assert emulator.user("weak@example.com") is None


async def test_editor_cannot_change_someone_elses_stream(
    backend: Any, emulator: Any, make_options: Any
) -> None:
    await emulator.add_user("other@example.com", "Other-Passw0rd", "editor")
    theirs_opts = make_options(
        emulator.base_url, email="other@example.com", password="Other-Passw0rd"
    )
    async with StreamSourceBackend("other", theirs_opts) as other:
        theirs = await other.create_stream(draft(9))
    with pytest.raises(PermissionDenied):
        await backend.update_stream(theirs.id, StreamPatch(title="mine now"))
    with pytest.raises(PermissionDenied):
        await backend.set_pinned(theirs.id, True)


# --- transient failures ----------------------------------------------------------------------


async def test_reads_are_retried_creates_are_not(backend: Any, emulator: Any) -> None:
    s = await backend.create_stream(draft())
    emulator.fail_next(2, status=500, method="GET", path=f"/api/v1/streams/{s.id}")
    assert (await backend.get_stream(s.id)).id == s.id
    emulator.fail_next(1, status=503, method="POST", path="/api/v1/streams", after=True)
    with pytest.raises(Unavailable, match="server error 503") as caught:
        await backend.create_stream(draft(2))
    assert caught.value.retryable
    # The create happened although the answer was an error: it was not repeated.
    assert len(emulator.streams()) == 2


async def test_maintenance(backend: Any, emulator: Any) -> None:
    await emulator.set_flag("maintenance_mode", "all")
    emulator.reset_counters()
    with pytest.raises(Unavailable, match="maintenance"):
        await backend.list_streams(StreamQuery())
    assert emulator.counters().statuses.get(503) == 1  # not retried: it will not pass soon
    # /health itself is exempt from maintenance, but the backend cannot work: not healthy.
    health = await backend.health()
    assert not health.ok
    assert "maintenance" in health.detail


# --- feature flags ---------------------------------------------------------------------------


async def test_capabilities_follow_the_server_flags(backend: Any, emulator: Any) -> None:
    s = await backend.create_stream(draft(status="live"))
    await backend.create_stream(draft(2))
    figures = await backend.analytics(s.id)
    assert figures.stream_id == s.id
    assert figures.views_count >= 0
    exported = await backend.export(StreamQuery(status="live"))
    assert [e.id for e in exported.streams] == [s.id]
    assert exported.exported_at.tzinfo is not None
    for flag in ("stream_analytics", "stream_export", "stream_bulk_import"):
        await emulator.set_flag(flag, "off")
    with pytest.raises(FeatureUnavailable):
        await backend.analytics(s.id)
    with pytest.raises(FeatureUnavailable):
        await backend.export()
    with pytest.raises(FeatureUnavailable):
        await backend.bulk_import([draft(3)])


async def test_bulk_import_in_chunks_with_per_item_errors(emulator: Any, make_options: Any) -> None:
    await emulator.set_flag("location_validation", "all")
    emulator.add_known_city("Austin", "TX")
    opts = make_options(emulator.base_url, bulk_chunk_size=2)
    drafts = [draft(i, city="Austin", state="TX") for i in range(5)]
    drafts[3] = draft(3, city="Atlantis")
    emulator.reset_counters()
    async with StreamSourceBackend("ss", opts) as backend:
        result = await backend.bulk_import(drafts)
    assert (result.imported, result.total, result.ids) == (4, 5, None)
    assert [e.index for e in result.errors] == [3]
    assert "recognized city" in result.errors[0].messages[0]
    assert emulator.counters().requests == 1 + 3  # login + three chunks
    assert len(emulator.streams()) == 4


async def test_health(backend: Any) -> None:
    health = await backend.health()
    assert health.ok
    assert "authenticated" in health.detail


async def test_closed_backend_says_so(emulator: Any, make_options: Any) -> None:
    backend = StreamSourceBackend("ss", make_options(emulator.base_url))
    with pytest.raises(BackendError, match="not open") as caught:
        await backend.get_stream(1)
    assert not caught.value.retryable


# --- secrets ---------------------------------------------------------------------------------


async def test_secrets_stay_out_of_logs_and_errors(
    emulator: Any, make_options: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with StreamSourceBackend("ss", make_options(emulator.base_url)) as backend:
        s = await backend.create_stream(draft())
        token = await backend.auth.bearer()
        emulator.fail_next(5, status=401, path=f"/api/v1/streams/{s.id}")
        try:
            await backend.get_stream(s.id)
        except AuthenticationFailed as exc:
            texts += [str(exc), repr(exc)]
        second = await backend.auth.bearer()
        texts.append(repr(backend))
    bad = make_options(emulator.base_url, password="Wr0ng-Secret-Pass")
    async with StreamSourceBackend("ss", bad) as backend:
        try:
            await backend.get_stream(1)
        except AuthenticationFailed as exc:
            texts += [str(exc), repr(exc)]
    texts += [r.getMessage() for r in caplog.records]
    texts += [str(r.args) for r in caplog.records]
    assert len(caplog.records) > 5
    for text in texts:
        for secret in (PASSWORD, "Wr0ng-Secret-Pass", token, second):
            assert secret not in text


async def test_dropped_connection_read_retried_create_not(backend: Any, emulator: Any) -> None:
    s = await backend.create_stream(draft())
    emulator.fail_next(1, method="GET", path=f"/api/v1/streams/{s.id}", disconnect=True)
    assert (await backend.get_stream(s.id)).id == s.id
    emulator.fail_next(1, method="POST", path="/api/v1/streams", disconnect=True)
    emulator.reset_counters()
    with pytest.raises(Unavailable, match="may or may not have been applied") as caught:
        await backend.create_stream(draft(2))
    assert caught.value.retryable
    assert emulator.counters().requests == 1  # the caller decides whether to create again
