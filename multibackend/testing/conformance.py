"""The conformance suite: the StreamBackend protocol as executable tests.

A plugin author subclasses :class:`BackendConformance` in a test module (its name must start with
``Test`` for pytest to collect it) and provides one async fixture, ``backend``, yielding a fresh,
empty, opened backend::

    import pytest
    from multibackend.registry import load_backend
    from multibackend.testing.conformance import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        async def backend(self):
            async with load_backend("mine", name="conformance") as backend:
                yield backend

Optional behaviour is gated, so a backend is only asked for what it announces:

* by ``backend.capabilities`` (pinning, bulk import, export, health) — tests of a capability the
  backend lacks are skipped with the reason, and the suite checks that calling it raises
  FeatureUnavailable instead;
* by ``backend.fields`` — a field the backend does not store is written (it must accept it) but
  never read back; preserved timestamps are tested only where stored;
* by the class attributes below, for what no capability can say. Override them on the subclass.

The suite never assumes ids are integers. It is fast (a few hundred backend calls over all), so it
also runs over HTTP and against PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from multibackend.backend import Capability, StreamBackend
from multibackend.errors import FeatureUnavailable, NotFound, ValidationFailed
from multibackend.model import (
    WRITABLE_FIELDS,
    Kind,
    Orientation,
    Page,
    Platform,
    Sort,
    Stream,
    StreamDraft,
    StreamId,
    StreamPatch,
    StreamQuery,
    StreamStatus,
    utc_now,
)

__all__ = ["BackendConformance"]

#: Non-default values for every writable field, for round trips.
FULL_VALUES: dict[str, Any] = {
    "source": "full-source",
    "link": "https://streams.example.test/full",
    "status": StreamStatus.OFFLINE,
    "is_pinned": True,
    "platform": Platform.TWITCH,
    "orientation": Orientation.VERTICAL,
    "kind": Kind.WEB,
    "city": "Portland",
    "state": "OR",
    "notes": "filmed from the bridge",
    "title": "March on Main St",
    "posted_by": "poster@example.test",
}
assert set(FULL_VALUES) == WRITABLE_FIELDS

#: Other values for the same fields, for updates.
OTHER_VALUES: dict[str, Any] = {
    "source": "other-source",
    "link": "https://streams.example.test/other",
    "status": StreamStatus.LIVE,
    "is_pinned": False,
    "platform": Platform.YOUTUBE,
    "orientation": Orientation.HORIZONTAL,
    "kind": Kind.OVERLAY,
    "city": "Salem",
    "state": "MA",
    "notes": "second note",
    "title": "Another title",
    "posted_by": "other@example.test",
}

NULLABLE_FIELDS = ("platform", "orientation", "city", "state", "notes", "title", "posted_by")
PRESERVED_AT = datetime(2024, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
PRESERVED_LIVE_AT = datetime(2024, 3, 4, 4, 0, 0, 123000, tzinfo=UTC)


def draft(n: int | str, **values: Any) -> StreamDraft:
    """A valid draft numbered ``n``; ``values`` override or add fields."""
    base: dict[str, Any] = {"source": f"source-{n}", "link": f"https://streams.example.test/{n}"}
    base.update(values)
    return StreamDraft(**base)


def _any(values: dict[str, Any]) -> dict[str, Any]:
    """Loosen a literal's inferred type for ** into a model class (mypy checks each key)."""
    return values


def stored(stream: Stream, fields: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(stream, name) for name in fields}


class BackendConformance:
    """Subclass with a ``backend`` fixture (fresh, empty, opened) to run the suite.

    Class attributes a subclass may override:
    """

    #: True when the backend knows the owner of each stream: streams carry ``user``, the
    #: ``user_id`` filter selects by it, and ``posted_by`` defaults to the owner's email.
    knows_owner: ClassVar[bool] = False
    #: With ``knows_owner``: a user id that owns none of the suite's streams, when filtering
    #: by it yields an empty page (None skips that check; the StreamSource server answers an
    #: unknown user id with 404 instead).
    other_user_id: ClassVar[StreamId | None] = None
    #: True when the backend applies the status side effects (``last_checked_at`` on a status
    #: change, ``last_live_at`` on becoming live) and reports those timestamps.
    tracks_status_timestamps: ClassVar[bool] = True
    #: Seconds between two writes for them to get distinct timestamps in this backend.
    timestamp_resolution: ClassVar[float] = 0.002
    #: How far (seconds) the backend's clock may be from the test's when checking stamped times.
    clock_tolerance: ClassVar[float] = 10.0
    #: Streams created for the multi-page iteration tests (must exceed the backend's page size;
    #: BaseBackend iterates 100 at a time).
    iteration_size: ClassVar[int] = 105
    #: Concurrent calls when the suite creates many streams.
    create_concurrency: ClassVar[int] = 16

    @pytest.fixture
    async def backend(self) -> AsyncIterator[StreamBackend]:
        """Override: yield a fresh, empty, opened backend (and close it afterwards)."""
        pytest.fail(f"{type(self).__name__} must provide an async 'backend' fixture")
        yield  # type: ignore[unreachable]  # noqa: PT022 (keeps this an async generator)

    # --- helpers -------------------------------------------------------------------------

    async def tick(self) -> None:
        """Wait long enough for the backend's clock to move on."""
        await asyncio.sleep(self.timestamp_resolution)

    async def create_in_order(
        self, backend: StreamBackend, drafts: Sequence[StreamDraft]
    ) -> list[Stream]:
        """Create one after the other, with distinct creation times."""
        created = []
        for d in drafts:
            created.append(await backend.create_stream(d))
            await self.tick()
        return created

    async def create_many(
        self, backend: StreamBackend, drafts: Sequence[StreamDraft]
    ) -> list[Stream]:
        gate = asyncio.Semaphore(self.create_concurrency)

        async def one(d: StreamDraft) -> Stream:
            async with gate:
                return await backend.create_stream(d)

        return list(await asyncio.gather(*(one(d) for d in drafts)))

    def assert_recent(self, value: datetime | None) -> None:
        assert value is not None
        assert value.tzinfo is not None
        assert abs((utc_now() - value).total_seconds()) < self.clock_tolerance

    @staticmethod
    def need(backend: StreamBackend, capability: Capability) -> None:
        if capability not in backend.capabilities:
            pytest.skip(f"backend lacks the {capability.value} capability")

    @staticmethod
    def need_fields(backend: StreamBackend, *names: str) -> None:
        missing = [n for n in names if n not in backend.fields]
        if missing:
            pytest.skip(f"backend does not store {', '.join(missing)}")

    def need_status_timestamps(self) -> None:
        if not self.tracks_status_timestamps:
            pytest.skip("tracks_status_timestamps is False for this backend")

    async def missing_id(self, backend: StreamBackend) -> StreamId:
        """An id the backend issued and no longer has (no assumption about id shapes)."""
        gone = await backend.create_stream(draft("gone"))
        await backend.delete_stream(gone.id)
        return gone.id

    @staticmethod
    def ids(streams: Iterable[Stream]) -> list[StreamId]:
        return [s.id for s in streams]

    @staticmethod
    async def count(backend: StreamBackend) -> int:
        return (await backend.list_streams(StreamQuery(per_page=1))).total_count

    # --- create and read -----------------------------------------------------------------

    async def test_create_returns_the_stream_with_a_new_id(self, backend: StreamBackend) -> None:
        stream = await backend.create_stream(draft(1))
        assert isinstance(stream.id, int | str)
        assert not isinstance(stream.id, bool)
        assert (stream.source, stream.link) == ("source-1", "https://streams.example.test/1")

    async def test_create_applies_the_defaults(self, backend: StreamBackend) -> None:
        stream = await backend.create_stream(draft(1))
        assert stream.status is StreamStatus.UNKNOWN
        assert stream.kind is Kind.VIDEO
        assert stream.is_pinned is False
        if self.tracks_status_timestamps:
            assert (stream.last_checked_at, stream.last_live_at) == (None, None)

    async def test_get_returns_what_create_returned(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(draft(1, title="t", city="c"))
        assert await backend.get_stream(created.id) == created

    async def test_create_round_trips_every_stored_field(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(StreamDraft(**FULL_VALUES))
        keep = WRITABLE_FIELDS & backend.fields
        assert stored(created, keep) == {k: FULL_VALUES[k] for k in keep}
        fetched = await backend.get_stream(created.id)
        assert stored(fetched, keep) == stored(created, keep)

    async def test_create_accepts_fields_it_does_not_store(self, backend: StreamBackend) -> None:
        # Every writable field, stored or not, preserved timestamps included: no error.
        full = StreamDraft(**FULL_VALUES, last_checked_at=PRESERVED_AT, created_at=PRESERVED_AT)
        stream = await backend.create_stream(full)
        assert stream.source == "full-source"

    async def test_ids_are_distinct_under_concurrent_creates(self, backend: StreamBackend) -> None:
        streams = await self.create_many(backend, [draft(i) for i in range(12)])
        assert len(set(self.ids(streams))) == 12
        assert await self.count(backend) == 12

    async def test_ids_read_back_as_issued(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(draft(1))
        page = await backend.list_streams(StreamQuery())
        assert [s.id for s in page.items] == [created.id]
        assert type(page.items[0].id) is type(created.id)

    # --- update --------------------------------------------------------------------------

    async def test_update_changes_given_fields_and_leaves_unset_ones(
        self, backend: StreamBackend
    ) -> None:
        created = await backend.create_stream(StreamDraft(**FULL_VALUES))
        updated = await backend.update_stream(created.id, StreamPatch(source="renamed"))
        assert updated.source == "renamed"
        keep = (WRITABLE_FIELDS & backend.fields) - {"source"}
        assert stored(updated, keep) == stored(created, keep)

    async def test_update_round_trips_every_stored_field(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(StreamDraft(**FULL_VALUES))
        updated = await backend.update_stream(created.id, StreamPatch(**OTHER_VALUES))
        keep = WRITABLE_FIELDS & backend.fields
        assert stored(updated, keep) == {k: OTHER_VALUES[k] for k in keep}
        assert stored(await backend.get_stream(created.id), keep) == stored(updated, keep)

    async def test_update_with_none_clears_nullable_fields(self, backend: StreamBackend) -> None:
        nullable = [f for f in NULLABLE_FIELDS if f in backend.fields]
        if not nullable:
            pytest.skip("backend stores no nullable field")
        created = await backend.create_stream(StreamDraft(**FULL_VALUES))
        updated = await backend.update_stream(
            created.id, StreamPatch(**_any(dict.fromkeys(nullable, None)))
        )
        expected: dict[str, Any] = dict.fromkeys(nullable, None)
        if self.knows_owner and "posted_by" in expected:
            # A blank posted_by becomes the owner's email on every save (contract §2).
            assert updated.user is not None
            expected["posted_by"] = updated.user.email
        assert stored(updated, nullable) == expected
        assert stored(await backend.get_stream(created.id), nullable) == stored(updated, nullable)
        assert updated.source == created.source
        assert updated.link == created.link

    async def test_update_accepts_fields_it_does_not_store(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(draft(1))
        updated = await backend.update_stream(created.id, StreamPatch(**OTHER_VALUES))
        assert updated.source == "other-source"

    async def test_empty_patch_changes_nothing(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(draft(1, title="kept"))
        await self.tick()
        assert await backend.update_stream(created.id, StreamPatch()) == created
        assert await backend.get_stream(created.id) == created

    async def test_update_returns_the_stream_as_stored(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(draft(1))
        updated = await backend.update_stream(created.id, StreamPatch(title="new", city="x"))
        assert await backend.get_stream(created.id) == updated

    # --- delete and missing ids ----------------------------------------------------------

    async def test_delete_removes_only_that_stream(self, backend: StreamBackend) -> None:
        keep, gone = await self.create_in_order(backend, [draft(1), draft(2)])
        await backend.delete_stream(gone.id)
        page = await backend.list_streams(StreamQuery())
        assert self.ids(page.items) == [keep.id]
        assert await backend.get_stream(keep.id) == keep

    async def test_get_of_a_missing_id_raises_not_found(self, backend: StreamBackend) -> None:
        missing = await self.missing_id(backend)
        with pytest.raises(NotFound) as info:
            await backend.get_stream(missing)
        assert info.value.backend == backend.name
        assert not info.value.retryable

    async def test_update_of_a_missing_id_raises_not_found(self, backend: StreamBackend) -> None:
        missing = await self.missing_id(backend)
        with pytest.raises(NotFound) as info:
            await backend.update_stream(missing, StreamPatch(title="x"))
        assert info.value.backend == backend.name
        assert await self.count(backend) == 0  # nothing was created instead

    async def test_delete_of_a_missing_id_raises_not_found(self, backend: StreamBackend) -> None:
        missing = await self.missing_id(backend)
        with pytest.raises(NotFound) as info:
            await backend.delete_stream(missing)
        assert info.value.backend == backend.name

    async def test_pin_of_a_missing_id_raises_not_found(self, backend: StreamBackend) -> None:
        self.need(backend, Capability.PIN)
        missing = await self.missing_id(backend)
        for pinned in (True, False):
            with pytest.raises(NotFound) as info:
                await backend.set_pinned(missing, pinned)
            assert info.value.backend == backend.name

    async def test_ids_of_another_shape_are_not_found(self, backend: StreamBackend) -> None:
        # An id of a shape this backend never issues (a word, or a large int) does not exist:
        # NotFound, not a crash or a type error.
        await backend.create_stream(draft(1))
        for foreign in ("no-such-stream", 987_654_321):
            with pytest.raises(NotFound) as info:
                await backend.get_stream(foreign)
            assert info.value.backend == backend.name

    # --- timestamps ----------------------------------------------------------------------

    async def test_create_stamps_created_and_updated_at(self, backend: StreamBackend) -> None:
        stream = await backend.create_stream(draft(1))
        self.assert_recent(stream.created_at)
        if stream.updated_at is not None:
            self.assert_recent(stream.updated_at)

    async def test_update_keeps_created_at(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(draft(1))
        await self.tick()
        updated = await backend.update_stream(created.id, StreamPatch(title="later"))
        assert updated.created_at == created.created_at

    async def test_update_advances_updated_at(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(draft(1))
        if created.updated_at is None:
            pytest.skip("backend does not report updated_at")
        await self.tick()
        updated = await backend.update_stream(created.id, StreamPatch(title="later"))
        assert updated.updated_at is not None
        assert updated.updated_at > created.updated_at

    async def test_preserved_created_at_is_kept(self, backend: StreamBackend) -> None:
        self.need_fields(backend, "created_at")
        stream = await backend.create_stream(draft(1, created_at=PRESERVED_AT))
        assert stream.created_at == PRESERVED_AT
        assert (await backend.get_stream(stream.id)).created_at == PRESERVED_AT

    async def test_preserved_status_timestamps_win_over_side_effects(
        self, backend: StreamBackend
    ) -> None:
        self.need_fields(backend, "last_checked_at", "last_live_at")
        stream = await backend.create_stream(
            draft(
                1,
                status="live",
                last_checked_at=PRESERVED_AT,
                last_live_at=PRESERVED_LIVE_AT,
            )
        )
        assert (stream.last_checked_at, stream.last_live_at) == (PRESERVED_AT, PRESERVED_LIVE_AT)
        fetched = await backend.get_stream(stream.id)
        assert (fetched.last_checked_at, fetched.last_live_at) == (PRESERVED_AT, PRESERVED_LIVE_AT)

    async def test_preserved_timestamps_in_a_patch_are_kept(self, backend: StreamBackend) -> None:
        self.need_fields(backend, "last_checked_at", "last_live_at")
        created = await backend.create_stream(draft(1))
        updated = await backend.update_stream(
            created.id,
            StreamPatch(status="live", last_checked_at=PRESERVED_AT, last_live_at=None),
        )
        assert updated.status is StreamStatus.LIVE
        assert (updated.last_checked_at, updated.last_live_at) == (PRESERVED_AT, None)

    # --- status side effects -------------------------------------------------------------

    async def test_create_live_stamps_checked_and_live_at(self, backend: StreamBackend) -> None:
        self.need_status_timestamps()
        stream = await backend.create_stream(draft(1, status="live"))
        self.assert_recent(stream.last_checked_at)
        self.assert_recent(stream.last_live_at)

    async def test_create_offline_stamps_only_checked_at(self, backend: StreamBackend) -> None:
        self.need_status_timestamps()
        stream = await backend.create_stream(draft(1, status="offline"))
        self.assert_recent(stream.last_checked_at)
        assert stream.last_live_at is None

    async def test_status_change_stamps_last_checked_at(self, backend: StreamBackend) -> None:
        self.need_status_timestamps()
        created = await backend.create_stream(draft(1, status="live"))
        await self.tick()
        updated = await backend.update_stream(created.id, StreamPatch(status="offline"))
        assert created.last_checked_at is not None
        assert updated.last_checked_at is not None
        assert updated.last_checked_at > created.last_checked_at
        assert updated.last_live_at == created.last_live_at  # going offline keeps it

    async def test_becoming_live_stamps_last_live_at(self, backend: StreamBackend) -> None:
        self.need_status_timestamps()
        created = await backend.create_stream(draft(1))
        updated = await backend.update_stream(created.id, StreamPatch(status="live"))
        self.assert_recent(updated.last_live_at)
        self.assert_recent(updated.last_checked_at)
        assert (await backend.get_stream(created.id)).last_live_at == updated.last_live_at

    async def test_same_status_changes_no_timestamp(self, backend: StreamBackend) -> None:
        self.need_status_timestamps()
        created = await backend.create_stream(draft(1, status="live"))
        await self.tick()
        updated = await backend.update_stream(created.id, StreamPatch(status="live"))
        assert (updated.last_checked_at, updated.last_live_at) == (
            created.last_checked_at,
            created.last_live_at,
        )

    async def test_other_fields_leave_status_timestamps(self, backend: StreamBackend) -> None:
        self.need_status_timestamps()
        created = await backend.create_stream(draft(1, status="offline"))
        await self.tick()
        updated = await backend.update_stream(created.id, StreamPatch(title="t", city="c"))
        assert updated.last_checked_at == created.last_checked_at
        assert updated.last_live_at is None

    # --- owners --------------------------------------------------------------------------

    async def test_streams_carry_their_owner(self, backend: StreamBackend) -> None:
        if not self.knows_owner:
            pytest.skip("knows_owner is False for this backend")
        stream = await backend.create_stream(draft(1))
        assert stream.user is not None
        assert stream.posted_by == stream.user.email  # posted_by defaults to the owner's email
        explicit = await backend.create_stream(draft(2, posted_by="someone@example.test"))
        assert explicit.posted_by == "someone@example.test"

    async def test_filter_by_user_id(self, backend: StreamBackend) -> None:
        if not self.knows_owner:
            pytest.skip("knows_owner is False for this backend")
        streams = await self.create_in_order(backend, [draft(1), draft(2)])
        owner = streams[0].user
        assert owner is not None
        page = await backend.list_streams(StreamQuery(user_id=owner.id))
        assert sorted(map(str, self.ids(page.items))) == sorted(map(str, self.ids(streams)))
        if self.other_user_id is not None:
            other = await backend.list_streams(StreamQuery(user_id=self.other_user_id))
            assert (other.items, other.total_count) == ((), 0)

    # --- filters -------------------------------------------------------------------------

    async def statuses(self, backend: StreamBackend) -> dict[str, Stream]:
        made = await self.create_in_order(
            backend,
            [
                draft("live-a", status="live"),
                draft("offline", status="offline"),
                draft("unknown"),
                draft("live-b", status="live"),
            ],
        )
        return {s.source or "": s for s in made}

    async def test_filter_by_status(self, backend: StreamBackend) -> None:
        made = await self.statuses(backend)
        page = await backend.list_streams(StreamQuery(status="live"))
        assert {s.id for s in page.items} == {made["source-live-a"].id, made["source-live-b"].id}
        assert page.total_count == 2
        assert all(s.status is StreamStatus.LIVE for s in page.items)

    async def test_filter_by_not_status(self, backend: StreamBackend) -> None:
        made = await self.statuses(backend)
        page = await backend.list_streams(StreamQuery(not_status="live"))
        assert {s.id for s in page.items} == {made["source-offline"].id, made["source-unknown"].id}
        assert page.total_count == 2

    async def test_filter_by_is_pinned(self, backend: StreamBackend) -> None:
        self.need(backend, Capability.PIN)
        a, b, c = await self.create_in_order(backend, [draft(1), draft(2), draft(3)])
        await backend.set_pinned(b.id, True)
        pinned = await backend.list_streams(StreamQuery(is_pinned=True))
        assert self.ids(pinned.items) == [b.id]
        unpinned = await backend.list_streams(StreamQuery(is_pinned=False))
        assert set(self.ids(unpinned.items)) == {a.id, c.id}
        assert (pinned.total_count, unpinned.total_count) == (1, 2)

    async def test_filters_combine_with_and(self, backend: StreamBackend) -> None:
        self.need(backend, Capability.PIN)
        made = await self.statuses(backend)
        await backend.set_pinned(made["source-live-a"].id, True)
        await backend.set_pinned(made["source-offline"].id, True)
        page = await backend.list_streams(StreamQuery(status="live", is_pinned=True))
        assert self.ids(page.items) == [made["source-live-a"].id]
        page = await backend.list_streams(StreamQuery(status="live", not_status="live"))
        assert page.total_count == 0

    async def test_filter_matching_nothing_gives_an_empty_page(
        self, backend: StreamBackend
    ) -> None:
        await backend.create_stream(draft(1))
        page = await backend.list_streams(StreamQuery(status="live"))
        assert (page.items, page.total_count, page.total_pages, page.page) == ((), 0, 0, 1)

    # --- order ---------------------------------------------------------------------------

    async def named(self, backend: StreamBackend) -> list[Stream]:
        # Created in this order; names deliberately not in creation order.
        return await self.create_in_order(
            backend,
            [draft(n, source=n) for n in ("delta", "alpha", "charlie", "bravo")],
        )

    async def test_sort_by_name(self, backend: StreamBackend) -> None:
        await self.named(backend)
        page = await backend.list_streams(StreamQuery(sort=Sort.NAME))
        assert [s.source for s in page.items] == ["alpha", "bravo", "charlie", "delta"]

    async def test_sort_by_name_descending(self, backend: StreamBackend) -> None:
        await self.named(backend)
        page = await backend.list_streams(StreamQuery(sort=Sort.NAME_DESC))
        assert [s.source for s in page.items] == ["delta", "charlie", "bravo", "alpha"]

    async def test_sort_by_created(self, backend: StreamBackend) -> None:
        made = await self.named(backend)
        page = await backend.list_streams(StreamQuery(sort=Sort.CREATED))
        assert self.ids(page.items) == self.ids(made)

    async def test_sort_by_created_descending(self, backend: StreamBackend) -> None:
        made = await self.named(backend)
        page = await backend.list_streams(StreamQuery(sort=Sort.CREATED_DESC))
        assert self.ids(page.items) == self.ids(reversed(made))

    async def test_default_order_is_newest_first(self, backend: StreamBackend) -> None:
        made = await self.named(backend)
        page = await backend.list_streams(StreamQuery())
        assert self.ids(page.items) == self.ids(reversed(made))

    async def test_default_order_puts_pinned_first(self, backend: StreamBackend) -> None:
        self.need(backend, Capability.PIN)
        made = await self.named(backend)  # delta, alpha, charlie, bravo (oldest first)
        await backend.set_pinned(made[0].id, True)
        await backend.set_pinned(made[2].id, True)
        page = await backend.list_streams(StreamQuery())
        assert [s.source for s in page.items] == ["charlie", "delta", "bravo", "alpha"]

    async def test_explicit_sorts_ignore_pinning(self, backend: StreamBackend) -> None:
        self.need(backend, Capability.PIN)
        made = await self.named(backend)
        await backend.set_pinned(made[0].id, True)  # delta
        by_name = await backend.list_streams(StreamQuery(sort=Sort.NAME))
        assert [s.source for s in by_name.items] == ["alpha", "bravo", "charlie", "delta"]
        by_created = await backend.list_streams(StreamQuery(sort=Sort.CREATED_DESC))
        assert by_created.items[-1].id == made[0].id

    # --- pagination ----------------------------------------------------------------------

    async def five(self, backend: StreamBackend) -> list[Stream]:
        return await self.create_in_order(backend, [draft(i) for i in range(5)])

    async def test_first_page_and_its_meta(self, backend: StreamBackend) -> None:
        made = await self.five(backend)
        page = await backend.list_streams(StreamQuery(per_page=2))
        assert self.ids(page.items) == self.ids(reversed(made))[:2]
        assert (page.page, page.per_page, page.total_count, page.total_pages) == (1, 2, 5, 3)

    async def test_last_page_is_partial(self, backend: StreamBackend) -> None:
        made = await self.five(backend)
        page = await backend.list_streams(StreamQuery(per_page=2, page=3))
        assert self.ids(page.items) == [made[0].id]
        assert (page.page, page.per_page, page.total_count, page.total_pages) == (3, 2, 5, 3)

    async def test_page_past_the_end_is_empty_with_meta(self, backend: StreamBackend) -> None:
        await self.five(backend)
        page = await backend.list_streams(StreamQuery(per_page=2, page=7))
        assert page.items == ()
        assert (page.page, page.per_page, page.total_count, page.total_pages) == (7, 2, 5, 3)

    async def test_pages_cover_every_stream_once(self, backend: StreamBackend) -> None:
        made = await self.five(backend)
        seen: list[StreamId] = []
        for number in (1, 2, 3):
            seen += self.ids(
                (await backend.list_streams(StreamQuery(per_page=2, page=number))).items
            )
        assert seen == self.ids(reversed(made))

    async def test_empty_backend_has_zero_pages(self, backend: StreamBackend) -> None:
        page = await backend.list_streams(StreamQuery())
        assert page == Page(items=(), page=1, per_page=25, total_count=0, total_pages=0)

    async def test_default_page_size_is_25(self, backend: StreamBackend) -> None:
        await self.create_many(backend, [draft(i) for i in range(27)])
        page = await backend.list_streams(StreamQuery())
        assert (len(page.items), page.per_page, page.total_count, page.total_pages) == (
            25,
            25,
            27,
            2,
        )

    # --- iteration -----------------------------------------------------------------------

    async def test_iter_streams_walks_every_page(self, backend: StreamBackend) -> None:
        made = await self.create_many(backend, [draft(i) for i in range(self.iteration_size)])
        seen = [s.id async for s in backend.iter_streams()]
        assert len(seen) == len(made)
        assert set(seen) == set(self.ids(made))

    async def test_iter_streams_applies_filters(self, backend: StreamBackend) -> None:
        offline = [draft(f"off-{i}", status="offline") for i in range(self.iteration_size)]
        live = [draft(f"live-{i}", status="live") for i in range(5)]
        made = await self.create_many(backend, offline + live)
        want_offline = {s.id for s in made if s.status is StreamStatus.OFFLINE}
        got_offline = [s.id async for s in backend.iter_streams(StreamQuery(status="offline"))]
        assert len(got_offline) == len(want_offline)
        assert set(got_offline) == want_offline
        got_live = [s.id async for s in backend.iter_streams(StreamQuery(not_status="offline"))]
        assert set(got_live) == {s.id for s in made} - want_offline

    async def test_iter_streams_of_an_empty_backend(self, backend: StreamBackend) -> None:
        assert [s async for s in backend.iter_streams()] == []

    async def test_iter_streams_ignores_the_query_page(self, backend: StreamBackend) -> None:
        made = await self.five(backend)
        seen = [s.id async for s in backend.iter_streams(StreamQuery(page=3, per_page=2))]
        assert set(seen) == set(self.ids(made))
        assert len(seen) == 5

    # --- pinning -------------------------------------------------------------------------

    async def test_pin_and_unpin(self, backend: StreamBackend) -> None:
        self.need(backend, Capability.PIN)
        created = await backend.create_stream(draft(1))
        pinned = await backend.set_pinned(created.id, True)
        assert pinned.is_pinned
        assert (await backend.get_stream(created.id)).is_pinned
        unpinned = await backend.set_pinned(created.id, False)
        assert not unpinned.is_pinned
        assert not (await backend.get_stream(created.id)).is_pinned
        assert unpinned.source == created.source

    async def test_pin_and_unpin_are_idempotent(self, backend: StreamBackend) -> None:
        self.need(backend, Capability.PIN)
        created = await backend.create_stream(draft(1))
        assert (await backend.set_pinned(created.id, False)).is_pinned is False
        await backend.set_pinned(created.id, True)
        assert (await backend.set_pinned(created.id, True)).is_pinned is True
        assert (await backend.list_streams(StreamQuery(is_pinned=True))).total_count == 1

    async def test_pinned_streams_can_be_updated_and_deleted(self, backend: StreamBackend) -> None:
        self.need(backend, Capability.PIN)
        created = await backend.create_stream(draft(1))
        await backend.set_pinned(created.id, True)
        updated = await backend.update_stream(created.id, StreamPatch(status="live"))
        assert updated.is_pinned
        assert updated.status is StreamStatus.LIVE
        await backend.delete_stream(created.id)
        assert await self.count(backend) == 0

    # --- validation happens before the backend -------------------------------------------

    async def test_bad_link_is_refused_naming_the_field(self, backend: StreamBackend) -> None:
        for bad in ("streams.example.test/x", "ftp://streams.example.test/x", ""):
            with pytest.raises(ValidationFailed) as info:
                await backend.create_stream(draft(1, link=bad))
            assert info.value.field == "link"
        assert await self.count(backend) == 0

    async def test_bad_enum_is_refused_naming_the_field(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(draft(1))
        for field, bad in (("status", "bogus"), ("kind", "stream"), ("orientation", "portrait")):
            with pytest.raises(ValidationFailed) as info:
                await backend.update_stream(created.id, StreamPatch(**_any({field: bad})))
            assert info.value.field == field
        assert await backend.get_stream(created.id) == created

    async def test_bad_source_is_refused_naming_the_field(self, backend: StreamBackend) -> None:
        for bad in ("", "x" * 256):
            with pytest.raises(ValidationFailed) as info:
                await backend.create_stream(draft(1, source=bad))
            assert info.value.field == "source"
        assert await self.count(backend) == 0

    async def test_required_fields_cannot_be_cleared(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(draft(1))
        for field in ("source", "link", "status", "kind"):
            with pytest.raises(ValidationFailed) as info:
                await backend.update_stream(created.id, StreamPatch(**_any({field: None})))
            assert info.value.field == field
        assert await backend.get_stream(created.id) == created

    async def test_bad_page_arguments_are_refused(self, backend: StreamBackend) -> None:
        for field, kwargs in (
            ("per_page", {"per_page": 0}),
            ("per_page", {"per_page": 101}),
            ("page", {"page": 0}),
        ):
            with pytest.raises(ValidationFailed) as info:
                await backend.list_streams(StreamQuery(**_any(kwargs)))
            assert info.value.field == field

    # --- optional operations -------------------------------------------------------------

    async def test_bulk_import_creates_every_item_and_reports_ids(
        self, backend: StreamBackend
    ) -> None:
        self.need(backend, Capability.BULK_IMPORT)
        result = await backend.bulk_import(  # type: ignore[attr-defined]
            [draft(1), draft(2, status="live"), draft(3)]
        )
        assert (result.imported, result.total, result.errors) == (3, 3, ())
        assert await self.count(backend) == 3
        if result.ids is not None:
            sources = [(await backend.get_stream(i)).source for i in result.ids]
            assert sources == ["source-1", "source-2", "source-3"]

    async def test_export_returns_every_matching_stream(self, backend: StreamBackend) -> None:
        self.need(backend, Capability.EXPORT)
        made = await self.statuses(backend)
        everything = await backend.export()  # type: ignore[attr-defined]
        assert {s.source for s in everything.streams} == set(made)
        self.assert_recent(everything.exported_at)
        live = await backend.export(StreamQuery(status="live"))  # type: ignore[attr-defined]
        assert {s.source for s in live.streams} == {"source-live-a", "source-live-b"}

    async def test_health_reports_ok(self, backend: StreamBackend) -> None:
        self.need(backend, Capability.HEALTH)
        health = await backend.health()  # type: ignore[attr-defined]
        assert health.ok is True

    async def test_missing_capabilities_raise_feature_unavailable(
        self, backend: StreamBackend
    ) -> None:
        created = await backend.create_stream(draft(1))
        calls = {
            Capability.BULK_IMPORT: ("bulk_import", ([draft(2)],)),
            Capability.EXPORT: ("export", ()),
            Capability.ANALYTICS: ("analytics", (created.id,)),
        }
        absent = [c for c in calls if c not in backend.capabilities]
        if not absent:
            pytest.skip("backend has every optional capability checked here")
        for capability in absent:
            method, args = calls[capability]
            if not hasattr(backend, method):
                continue  # not a BaseBackend: the operation simply does not exist
            with pytest.raises(FeatureUnavailable) as info:
                await getattr(backend, method)(*args)
            assert info.value.backend == backend.name
        assert await self.count(backend) == 1

    async def test_open_is_idempotent(self, backend: StreamBackend) -> None:
        created = await backend.create_stream(draft(1))
        await backend.open()
        assert await backend.get_stream(created.id) == created

    async def test_writes_are_visible_to_the_next_read(self, backend: StreamBackend) -> None:
        # Read-your-writes across the operations, on one backend object.
        created = await backend.create_stream(draft(1, status="offline"))
        await backend.update_stream(created.id, StreamPatch(status="live"))
        page = await backend.list_streams(StreamQuery(status="live"))
        assert self.ids(page.items) == [created.id]
        assert [s.id async for s in backend.iter_streams(StreamQuery(status="offline"))] == []

    async def test_preserved_created_at_places_the_stream_in_order(
        self, backend: StreamBackend
    ) -> None:
        # A preserved created_at in the past puts the stream last in the default order.
        self.need_fields(backend, "created_at")
        new = await backend.create_stream(draft("new"))
        old = await backend.create_stream(draft("old", created_at=utc_now() - timedelta(days=30)))
        page = await backend.list_streams(StreamQuery())
        assert self.ids(page.items) == [new.id, old.id]
