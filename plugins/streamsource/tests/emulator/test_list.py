"""GET /api/v1/streams: filters, sorts, pagination and their quirks (contract §1.2, §3)."""

from __future__ import annotations

from typing import Any

import pytest
from emulator_helpers import EMAILS, Api
from multibackend_streamsource.emulator import Emulator


@pytest.fixture
async def seeded(api: Api, emu: Emulator) -> dict[str, int]:
    """Five streams: b(live, editor), a(offline, editor, pinned), c(unknown, other),
    d(live, admin), e(live, editor, archived). Returns ids by source."""
    ids: dict[str, int] = {}
    for source, status, who in (
        ("b", "live", "editor"),
        ("a", "offline", "editor"),
        ("c", "unknown", "other"),
        ("d", "live", "admin"),
        ("e", "live", "editor"),
    ):
        ids[source] = (await api.create(as_=who, source=source, status=status))["id"]
    await api.call("PUT", f"/api/v1/streams/{ids['a']}/pin")
    await emu.archive_stream(ids["e"])
    return ids


async def sources(api: Api, params: Any, as_: str = "editor") -> list[str]:
    reply = await api.call("GET", "/api/v1/streams", as_=as_, params=params)
    assert reply.status == 200, reply.text
    return [s["source"] for s in reply.body["streams"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["a", "d", "c", "b"]),  # pinned first, then newest; archived hidden
        ({"status": "live"}, ["d", "b"]),
        ({"status": "Live"}, ["d", "b"]),
        ({"status": "LIVE"}, []),
        ({"status": "bogus"}, []),
        ({"status": ""}, ["a", "d", "c", "b"]),
        ([("status[]", "live"), ("status[]", "Offline")], ["a", "d", "b"]),
        ({"notStatus": "live"}, ["a", "c"]),
        ({"notStatus": "bogus"}, ["a", "d", "c", "b"]),
        ([("notStatus[]", "live"), ("notStatus[]", "offline")], ["c"]),
        ({"status": "live", "notStatus": "live"}, []),
        ({"not_status": "live"}, ["a", "d", "c", "b"]),  # snake case is not a filter
        ({"is_pinned": "true"}, ["a"]),
        ({"is_pinned": "false"}, ["d", "c", "b"]),
        ({"is_pinned": "0"}, ["d", "c", "b"]),
        ({"is_pinned": "f"}, ["d", "c", "b"]),
        ({"is_pinned": "OFF"}, ["d", "c", "b"]),
        ({"is_pinned": "False"}, ["a"]),  # not one of Rails' false spellings
        ({"is_pinned": "no"}, ["a"]),
        ({"is_pinned": ""}, ["a", "d", "c", "b"]),
        ({"sort": "name"}, ["a", "b", "c", "d"]),
        ({"sort": "-name"}, ["d", "c", "b", "a"]),
        ({"sort": "created"}, ["b", "a", "c", "d"]),
        ({"sort": "-created"}, ["d", "c", "a", "b"]),  # explicit sorts drop pinned-first
        ({"sort": "bogus"}, ["a", "d", "c", "b"]),
        ({"platform": "twitch", "search": "zzz"}, ["a", "d", "c", "b"]),  # not supported
    ],
)
async def test_filters_and_sorts(
    api: Api, seeded: dict[str, int], params: Any, expected: list[str]
) -> None:
    assert await sources(api, params) == expected


async def test_admins_see_archived_streams(api: Api, seeded: dict[str, int]) -> None:
    assert await sources(api, {"sort": "name"}, as_="admin") == ["a", "b", "c", "d", "e"]


async def test_user_id_filter(api: Api, emu: Emulator, seeded: dict[str, int]) -> None:
    editor = emu.user(EMAILS["editor"])
    assert editor is not None
    assert await sources(api, {"user_id": str(editor.id)}) == ["a", "b"]
    assert await sources(api, {"user_id": f"{editor.id}xyz"}) == ["a", "b"]  # to_i
    assert await sources(api, {"user_id": ""}) == ["a", "d", "c", "b"]
    for unknown in ("9999", "abc"):
        reply = await api.call("GET", "/api/v1/streams", params={"user_id": unknown})
        assert (reply.status, reply.body) == (404, {"error": "Record not found"})


async def test_pagination_meta(api: Api, seeded: dict[str, int]) -> None:
    reply = await api.call("GET", "/api/v1/streams", params={"per_page": "3", "page": "2"})
    assert reply.body["meta"] == {
        "current_page": 2,
        "total_pages": 2,
        "total_count": 4,
        "per_page": 3,
    }
    assert [s["source"] for s in reply.body["streams"]] == ["b"]
    reply = await api.call("GET", "/api/v1/streams", params={"page": "9"})
    assert reply.status == 200
    assert reply.body["streams"] == []
    assert reply.body["meta"]["current_page"] == 9
    reply = await api.call("GET", "/api/v1/streams", params={"per_page": "500"})
    assert reply.body["meta"]["per_page"] == 100
    reply = await api.call("GET", "/api/v1/streams", params={"per_page": "2abc"})
    assert reply.body["meta"]["per_page"] == 2


async def test_empty_list_has_zero_pages(api: Api) -> None:
    reply = await api.call("GET", "/api/v1/streams")
    assert reply.body == {
        "streams": [],
        "meta": {"current_page": 1, "total_pages": 0, "total_count": 0, "per_page": 25},
    }


@pytest.mark.parametrize(
    "params",
    [
        {"page": "0"},
        {"page": "-1"},
        {"page": "abc"},
        {"page": ""},
        {"per_page": "0"},
        {"per_page": "-5"},
        {"per_page": "abc"},
    ],
)
async def test_bad_page_numbers_answer_500(api: Api, params: dict[str, str]) -> None:
    reply = await api.call("GET", "/api/v1/streams", params=params)
    assert (reply.status, reply.body) == (500, {"status": 500, "error": "Internal Server Error"})


async def test_unknown_user_id_beats_bad_page(api: Api) -> None:
    reply = await api.call("GET", "/api/v1/streams", params={"user_id": "999", "page": "0"})
    assert reply.status == 404


async def test_list_items_have_no_root_and_the_stream_shape(api: Api) -> None:
    created = await api.create()
    reply = await api.call("GET", "/api/v1/streams")
    assert reply.body["streams"] == [created]
    assert "X-RateLimit-Limit" not in reply.headers
