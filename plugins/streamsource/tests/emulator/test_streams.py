"""Stream endpoints: bodies, validation, casts, quirks, permissions, check order."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from emulator_helpers import EMAILS, Api
from multibackend_streamsource.emulator import Emulator

TS_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
STREAM_KEYS = [
    "id",
    "source",
    "link",
    "status",
    "is_pinned",
    "created_at",
    "updated_at",
    "city",
    "state",
    "platform",
    "notes",
    "title",
    "last_checked_at",
    "last_live_at",
    "posted_by",
    "orientation",
    "kind",
    "analytics_url",
    "user",
]
SERVER_ERROR = {"status": 500, "error": "Internal Server Error"}
FORBIDDEN = {"error": "You are not authorized to perform this action"}
NOT_FOUND = {"error": "Record not found"}


async def test_create_answers_201_with_the_serialized_stream(api: Api, emu: Emulator) -> None:
    reply = await api.call(
        "POST",
        "/api/v1/streams",
        json={
            "source": "alice",
            "link": "  https://tiktok.com/@alice  ",
            "platform": "TikTok",
            "orientation": "vertical",
            "city": "Austin",
            "state": "TX",
            "notes": "n",
            "title": "t",
            # Not permitted: silently ignored.
            "is_pinned": True,
            "user_id": 99,
            "id": 1234,
            "is_archived": True,
            "last_checked_at": "2020-01-01T00:00:00Z",
            "location": {"city": "Austin"},
        },
    )
    assert reply.status == 201, reply.text
    stream = reply.body["stream"]
    assert list(stream) == STREAM_KEYS
    assert stream["link"] == "https://tiktok.com/@alice"
    assert stream["platform"] == "tiktok"
    assert stream["status"] == "unknown"
    assert stream["kind"] == "video"
    assert stream["is_pinned"] is False
    assert stream["id"] != 1234
    assert stream["posted_by"] == EMAILS["editor"]
    assert stream["last_checked_at"] is None
    assert stream["last_live_at"] is None
    assert TS_MS.match(stream["created_at"])
    assert stream["created_at"] == stream["updated_at"]
    assert stream["analytics_url"] == f"/api/v1/streams/{stream['id']}/analytics"
    assert stream["user"]["email"] == EMAILS["editor"]
    assert list(stream["user"]) == ["id", "email", "role", "created_at", "updated_at"]
    hidden = emu.stream(stream["id"])
    assert hidden is not None
    assert hidden["is_archived"] is False


async def test_create_live_stamps_checked_and_live(api: Api, emu: Emulator) -> None:
    stream = await api.create(status="Live", posted_by="someone")
    assert stream["status"] == "live"
    assert stream["posted_by"] == "someone"
    assert TS_MS.match(stream["last_checked_at"])
    assert stream["last_live_at"] == stream["last_checked_at"]
    assert emu.stream(stream["id"])["started_at"] is not None  # type: ignore[index]
    offline = await api.create(status="offline")
    assert offline["last_checked_at"] is not None
    assert offline["last_live_at"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {},
            "Link can't be blank, Link must be a valid HTTP or HTTPS URL, Source can't be blank, "
            "Source is too short (minimum is 1 character)",
        ),
        (
            {"stream": {"source": "a", "link": "https://x.com"}},  # wrapped: nothing permitted
            "Link can't be blank, Link must be a valid HTTP or HTTPS URL, Source can't be blank, "
            "Source is too short (minimum is 1 character)",
        ),
        (
            {"source": "", "link": "not-a-url"},
            "Link must be a valid HTTP or HTTPS URL, Source can't be blank, "
            "Source is too short (minimum is 1 character)",
        ),
        ({"source": "   ", "link": "https://x.com"}, "Source can't be blank"),
        (
            {"source": "a" * 256, "link": "https://x.com"},
            "Source is too long (maximum is 255 characters)",
        ),
        ({"source": "a", "link": "example.com"}, "Link must be a valid HTTP or HTTPS URL"),
        ({"source": "a", "link": "ftp://x"}, "Link must be a valid HTTP or HTTPS URL"),
        ({"source": "a", "link": "HTTPS://X.COM"}, "Link must be a valid HTTP or HTTPS URL"),
        ({"source": "a", "link": 123}, "Link must be a valid HTTP or HTTPS URL"),
        (
            {"source": "a", "link": "   "},
            "Link can't be blank, Link must be a valid HTTP or HTTPS URL",
        ),
        (
            {"source": "a", "link": "https://x.com", "status": ""},
            "Status is not included in the list",
        ),
        (
            {"source": "a", "link": "https://x.com", "status": None},
            "Status is not included in the list",
        ),
        (
            {"source": "a", "link": "https://x.com", "status": False},
            "Status is not included in the list",
        ),
        (
            {"source": "a", "link": "https://x.com", "kind": None},
            "Kind is not included in the list",
        ),
        (
            {"source": ["a"], "link": {"u": "https://x.com"}},  # non-scalars are not permitted
            "Link can't be blank, Link must be a valid HTTP or HTTPS URL, Source can't be blank, "
            "Source is too short (minimum is 1 character)",
        ),
    ],
)
async def test_create_validation_answers_422_with_one_string(
    api: Api, body: dict[str, Any], message: str
) -> None:
    reply = await api.call("POST", "/api/v1/streams", json=body)
    assert (reply.status, reply.body) == (422, {"error": message})


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("link", "text http://x", "text http://x"),  # the server's pattern is unanchored
        ("link", "http://", "http://"),
        ("source", 123, "123"),
        ("title", True, "t"),
        ("notes", False, "f"),
        ("city", 1.5, "1.5"),
        ("platform", "", None),
        ("platform", "youtube", "youtube"),
        ("platform", "YouTube", "youtube"),
        ("orientation", None, None),
        ("kind", "background", "background"),
        ("status", "Offline", "offline"),
        ("posted_by", "   ", EMAILS["editor"]),
    ],
)
async def test_create_casts_values_like_activerecord(
    api: Api, field: str, value: object, stored: object
) -> None:
    body = {"source": "a", "link": "https://x.com", field: value}
    reply = await api.call("POST", "/api/v1/streams", json=body)
    assert reply.status == 201, reply.text
    assert reply.body["stream"][field] == stored


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "bogus"),
        ("status", "LIVE"),
        ("status", True),
        ("status", 1),
        ("platform", "myspace"),
        ("platform", "Tiktok"),
        ("orientation", "portrait"),
        ("kind", "stream"),
    ],
)
async def test_invalid_enum_value_answers_500(api: Api, field: str, value: object) -> None:
    body = {"source": "a", "link": "https://x.com", field: value}
    reply = await api.call("POST", "/api/v1/streams", json=body)
    assert (reply.status, reply.body) == (500, SERVER_ERROR)
    # Without Accept: application/json, Rails renders its HTML page.
    reply = await api.call("POST", "/api/v1/streams", json=body, accept_json=False)
    assert reply.status == 500
    assert reply.headers["Content-Type"].startswith("text/html")


async def test_invalid_enum_beats_the_policy_check(api: Api) -> None:
    body = {"source": "a", "link": "https://x.com", "status": "bogus"}
    reply = await api.call("POST", "/api/v1/streams", as_="default", json=body)
    assert reply.status == 500
    reply = await api.call("POST", "/api/v1/streams", as_="default", json={"source": ""})
    assert (reply.status, reply.body) == (403, FORBIDDEN)


async def test_location_id_breaks_the_foreign_key(api: Api) -> None:
    body = {"source": "a", "link": "https://x.com", "location_id": 7}
    reply = await api.call("POST", "/api/v1/streams", json=body)
    assert reply.status == 500
    body["location_id"] = None
    assert (await api.call("POST", "/api/v1/streams", json=body)).status == 201


# --- the role and ownership matrix -----------------------------------------------------------

MATRIX = [
    # (who, owner of the stream, expected status) for update/delete/pin/unpin
    ("default", "default", 403),  # a default user cannot touch even their own stream
    ("default", "editor", 403),
    ("editor", "editor", None),
    ("other", "editor", 403),
    ("admin", "editor", None),
    ("editor", "admin", 403),
]
ACTIONS = [
    ("PATCH", "", {"title": "changed"}, 200),
    ("PUT", "", {"title": "changed"}, 200),
    ("PUT", "/pin", None, 200),
    ("DELETE", "/pin", None, 200),
    ("DELETE", "", None, 204),
]


@pytest.mark.parametrize(("who", "owner", "expected"), MATRIX)
@pytest.mark.parametrize(("method", "suffix", "body", "ok"), ACTIONS)
async def test_member_action_permissions(
    api: Api,
    emu: Emulator,
    who: str,
    owner: str,
    expected: int | None,
    method: str,
    suffix: str,
    body: object,
    ok: int,
) -> None:
    if owner == "default":
        # Default users cannot create; give them a stream by changing roles around.
        await emu.update_user(EMAILS["default"], role="editor")
        stream = await api.create(as_="default")
        await emu.update_user(EMAILS["default"], role="default")
    else:
        stream = await api.create(as_=owner)
    reply = await api.call(method, f"/api/v1/streams/{stream['id']}{suffix}", as_=who, json=body)
    status = expected or ok
    assert reply.status == status, reply.text
    if status == 403:
        assert reply.body == FORBIDDEN
    elif status == 204:
        assert reply.text == ""
        assert (await api.call("GET", f"/api/v1/streams/{stream['id']}")).status == 404
    else:
        assert set(reply.body) == {"stream"}


@pytest.mark.parametrize(("who", "status"), [("default", 403), ("editor", 201), ("admin", 201)])
async def test_create_permissions(api: Api, who: str, status: int) -> None:
    body = {"source": "a", "link": "https://x.com"}
    reply = await api.call("POST", "/api/v1/streams", as_=who, json=body)
    assert reply.status == status
    if status == 201:
        assert reply.body["stream"]["user"]["email"] == EMAILS[who]


async def test_check_order_401_503_404_403(api: Api, emu: Emulator) -> None:
    stream = await api.create(as_="editor")
    path = f"/api/v1/streams/{stream['id']}"
    await emu.set_flag("maintenance_mode", "all")
    assert (await api.call("PATCH", "/api/v1/streams/999", as_=None, json={})).status == 401
    assert (await api.call("PATCH", "/api/v1/streams/999", as_="default", json={})).status == 503
    malformed = await api.call(
        "PATCH",
        path,
        data=b"{",
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status == 503
    await emu.set_flag("maintenance_mode", "off")
    reply = await api.call("PATCH", "/api/v1/streams/999", as_="default", json={})
    assert (reply.status, reply.body) == (404, NOT_FOUND)
    reply = await api.call("PATCH", path, as_="default", json={"status": "bogus"})
    assert (reply.status, reply.body) == (403, FORBIDDEN)  # update authorizes before assigning
    reply = await api.call("PATCH", path, as_="editor", json={"status": "bogus"})
    assert reply.status == 500
    malformed = await api.call(
        "PATCH", path, data=b"{", headers={"Content-Type": "application/json"}
    )
    assert (malformed.status, malformed.body) == (400, {"status": 400, "error": "Bad Request"})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/streams"),
        ("POST", "/api/v1/streams"),
        ("GET", "/api/v1/streams/1"),
        ("PATCH", "/api/v1/streams/1"),
        ("PUT", "/api/v1/streams/1"),
        ("DELETE", "/api/v1/streams/1"),
        ("PUT", "/api/v1/streams/1/pin"),
        ("DELETE", "/api/v1/streams/1/pin"),
        ("GET", "/api/v1/streams/1/analytics"),
        ("POST", "/api/v1/streams/bulk_import"),
        ("GET", "/api/v1/streams/export"),
    ],
)
async def test_every_stream_route_needs_a_token(api: Api, method: str, path: str) -> None:
    reply = await api.call(method, path, as_=None, json={})
    assert (reply.status, reply.body) == (401, {"error": "Unauthorized"})


# --- show, update, delete, pin ---------------------------------------------------------------


async def test_show_any_user_reads_any_stream_even_archived(api: Api, emu: Emulator) -> None:
    stream = await api.create(as_="admin")
    await emu.archive_stream(stream["id"])
    reply = await api.call("GET", f"/api/v1/streams/{stream['id']}", as_="default")
    assert reply.status == 200
    assert reply.body["stream"]["id"] == stream["id"]
    # Ids go through Ruby's to_i: "12abc" is 12, "abc" is 0.
    reply = await api.call("GET", f"/api/v1/streams/{stream['id']}abc", as_="default")
    assert reply.body["stream"]["id"] == stream["id"]
    reply = await api.call("GET", "/api/v1/streams/abc", as_="default")
    assert (reply.status, reply.body) == (404, NOT_FOUND)


async def test_update_is_partial_and_null_clears(api: Api) -> None:
    stream = await api.create(title="t", city="Austin", platform="twitch")
    path = f"/api/v1/streams/{stream['id']}"
    reply = await api.call("PATCH", path, json={"city": None, "notes": "n"})
    assert reply.status == 200
    updated = reply.body["stream"]
    assert (updated["city"], updated["notes"], updated["title"]) == (None, "n", "t")
    assert updated["platform"] == "twitch"
    reply = await api.call("PUT", path, json={"link": None})
    assert (reply.status, reply.body) == (
        422,
        {"error": "Link can't be blank, Link must be a valid HTTP or HTTPS URL"},
    )
    # A wrapped body permits nothing: no change, 200.
    reply = await api.call("PATCH", path, json={"stream": {"title": "x"}})
    assert reply.status == 200
    assert reply.body["stream"]["title"] == "t"


async def test_update_status_side_effects(api: Api) -> None:
    stream = await api.create()
    path = f"/api/v1/streams/{stream['id']}"
    await asyncio.sleep(0.002)
    same = (await api.call("PATCH", path, json={"status": "unknown"})).body["stream"]
    assert same["last_checked_at"] is None
    assert same["updated_at"] == stream["updated_at"]  # nothing changed
    offline = (await api.call("PATCH", path, json={"status": "offline"})).body["stream"]
    assert offline["last_checked_at"] is not None
    assert offline["last_live_at"] is None
    assert offline["updated_at"] > stream["updated_at"]
    await asyncio.sleep(0.002)
    live = (await api.call("PATCH", path, json={"status": "live"})).body["stream"]
    assert live["last_live_at"] == live["last_checked_at"] > offline["last_checked_at"]
    await asyncio.sleep(0.002)
    again = (await api.call("PATCH", path, json={"status": "Live"})).body["stream"]
    assert again["last_checked_at"] == live["last_checked_at"]


async def test_posted_by_defaults_to_the_owner_email(api: Api) -> None:
    stream = await api.create(as_="editor", posted_by="x")
    path = f"/api/v1/streams/{stream['id']}"
    reply = await api.call("PATCH", path, as_="admin", json={"posted_by": ""})
    assert reply.body["stream"]["posted_by"] == EMAILS["editor"]


async def test_pin_and_unpin_are_idempotent(api: Api) -> None:
    stream = await api.create()
    path = f"/api/v1/streams/{stream['id']}/pin"
    for method, pinned in (("PUT", True), ("PUT", True), ("DELETE", False), ("DELETE", False)):
        reply = await api.call(method, path)
        assert reply.status == 200
        assert reply.body["stream"]["is_pinned"] is pinned
    assert (await api.call("PATCH", path)).status == 404  # no such route


async def test_pinned_streams_can_still_change_and_go(api: Api) -> None:
    stream = await api.create()
    await api.call("PUT", f"/api/v1/streams/{stream['id']}/pin")
    reply = await api.call("PATCH", f"/api/v1/streams/{stream['id']}", json={"status": "live"})
    assert reply.status == 200
    assert reply.body["stream"]["is_pinned"] is True
    assert (await api.call("DELETE", f"/api/v1/streams/{stream['id']}")).status == 204


async def test_collection_names_are_ids_for_other_methods(api: Api) -> None:
    # DELETE /streams/export is the member route with id "export" (Record not found).
    reply = await api.call("DELETE", "/api/v1/streams/export")
    assert (reply.status, reply.body) == (404, NOT_FOUND)


@pytest.mark.parametrize(
    "body",
    [
        b'{"source": "\\ud800", "link": "https://x.io"}',  # a lone surrogate as an escape
        '{"source": "\ud800", "link": "https://x.io"}'.encode("utf-8", "surrogatepass"),
        b'{"stream": {"source": "a\\udfff", "link": "https://x.io"}}',
    ],
    ids=["escape", "bytes", "wrapped"],
)
async def test_a_body_with_a_lone_surrogate_is_malformed_and_nothing_is_stored(
    api: Api, emu: Emulator, body: bytes
) -> None:
    """No UTF-8 text holds a lone surrogate: the body is malformed (400), as a bad JSON body
    is. Stored, it made every later answer that rendered the stream fail with a 500 (found
    by the raw-body fuzzer)."""
    reply = await api.call(
        "POST", "/api/v1/streams", data=body, headers={"Content-Type": "application/json"}
    )
    assert (reply.status, reply.body) == (400, {"status": 400, "error": "Bad Request"})
    listed = await api.call("GET", "/api/v1/streams")
    assert listed.status == 200
    assert emu.counters().errors == 0
    # Text that only looks close (Hangul is 0xED-led in UTF-8, a paired escape) is fine.
    ok = await api.call(
        "POST",
        "/api/v1/streams",
        data='{"source": "\ud55c \\ud83c\\udfa5", "link": "https://x.io"}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert ok.status == 201, ok.text
    assert ok.body is not None
    assert ok.body["stream"]["source"] == "\ud55c \U0001f3a5"
