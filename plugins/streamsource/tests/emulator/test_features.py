"""Feature flags, analytics, bulk import, export, maintenance and health (§1.0, §1.5, §6)."""

from __future__ import annotations

import re

import pytest
from emulator_helpers import EMAILS, Api
from multibackend_streamsource.emulator import SEEDED_DEFAULTS, Emulator

MAINTENANCE = {
    "error": "The API is currently under maintenance. Please try again later.",
    "maintenance": True,
}


async def test_seeded_flag_defaults(api: Api, emu: Emulator) -> None:
    assert emu.flags() == {
        "stream_analytics": "all",
        "stream_bulk_import": "editors",
        "stream_export": "all",
        "stream_tags": "admins",
        "advanced_search": "off",
        "maintenance_mode": "off",
        "location_validation": "off",
    }
    assert set(SEEDED_DEFAULTS) == set(emu.flags())
    stream = await api.create()
    path = f"/api/v1/streams/{stream['id']}"
    as_admin = (await api.call("GET", path, as_="admin")).body["stream"]
    as_editor = (await api.call("GET", path, as_="editor")).body["stream"]
    assert as_admin["tags"] == []
    assert "tags" not in as_editor
    assert list(as_admin)[-3:] == ["analytics_url", "tags", "user"]


@pytest.mark.parametrize(
    ("flag", "value", "who", "has_analytics", "has_tags"),
    [
        ("stream_tags", "all", "editor", True, True),
        ("stream_tags", "editors", "admin", True, False),  # admins are not in "editors"
        ("stream_tags", "editors,admins", "admin", True, True),
        ("stream_analytics", "off", "admin", False, True),
        ("stream_analytics", "admins", "default", False, False),
    ],
)
async def test_flags_change_the_stream_json(
    api: Api,
    emu: Emulator,
    flag: str,
    value: str,
    who: str,
    has_analytics: bool,
    has_tags: bool,
) -> None:
    stream = await api.create()
    await emu.set_flag(flag, value)
    body = (await api.call("GET", f"/api/v1/streams/{stream['id']}", as_=who)).body["stream"]
    assert ("analytics_url" in body) is has_analytics
    assert ("tags" in body) is has_tags


async def test_unknown_flags_and_groups_are_refused(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown feature flag"):
        await emu.set_flag("stream_tagz", "all")
    with pytest.raises(ValueError, match="unknown flag group"):
        await emu.set_flag("stream_tags", "editorz")


async def test_analytics(api: Api, emu: Emulator) -> None:
    stream = await api.create()
    reply = await api.call("GET", f"/api/v1/streams/{stream['id']}/analytics", as_="default")
    assert reply.status == 200
    body = reply.body
    assert list(body) == [
        "stream_id",
        "views_count",
        "unique_viewers",
        "average_watch_time",
        "peak_concurrent_viewers",
        "last_updated",
    ]
    assert body["stream_id"] == stream["id"]
    assert 1000 <= body["views_count"] <= 10000
    assert 100 <= body["unique_viewers"] <= 1000
    assert 60 <= body["average_watch_time"] <= 3600
    assert 50 <= body["peak_concurrent_viewers"] <= 500
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", body["last_updated"])
    reply = await api.call("GET", "/api/v1/streams/999/analytics")
    assert (reply.status, reply.body) == (404, {"error": "Record not found"})
    await emu.set_flag("stream_analytics", "off")
    for path in (f"/api/v1/streams/{stream['id']}/analytics", "/api/v1/streams/999/analytics"):
        reply = await api.call("GET", path)
        assert (reply.status, reply.body) == (
            403,
            {"error": "This feature is not currently available"},
        )


async def test_bulk_import_saves_items_independently(api: Api, emu: Emulator) -> None:
    items = [
        {"source": "a", "link": "https://a.com", "status": "live", "location_id": 5},
        {"source": "b", "link": "https://b.com"},
        {"source": "c", "link": "not-a-url"},
        {"source": "", "link": ""},
    ]
    reply = await api.call("POST", "/api/v1/streams/bulk_import", json={"streams": items})
    assert reply.status == 200
    assert reply.body == {
        "imported": 2,
        "total": 4,
        "errors": [
            {"index": 2, "errors": ["Link must be a valid HTTP or HTTPS URL"]},
            {
                "index": 3,
                "errors": [
                    "Link can't be blank",
                    "Link must be a valid HTTP or HTTPS URL",
                    "Source can't be blank",
                    "Source is too short (minimum is 1 character)",
                ],
            },
        ],
    }
    saved = emu.streams()
    assert [s["source"] for s in saved] == ["a", "b"]
    assert saved[0]["last_live_at"] is not None
    assert saved[0]["posted_by"] == EMAILS["editor"]
    assert saved[0]["location_id"] is None  # not permitted in bulk items


async def test_bulk_import_enum_error_aborts_after_earlier_items(api: Api, emu: Emulator) -> None:
    items = [
        {"source": "a", "link": "https://a.com"},
        {"source": "b", "link": "https://b.com", "kind": "stream"},
        {"source": "c", "link": "https://c.com"},
    ]
    reply = await api.call("POST", "/api/v1/streams/bulk_import", json={"streams": items})
    assert reply.status == 500
    assert [s["source"] for s in emu.streams()] == ["a"]


@pytest.mark.parametrize("body", [[{"source": "a", "link": "https://a.com"}], {}, {"streams": 5}])
async def test_bulk_import_without_a_streams_list_imports_nothing(api: Api, body: object) -> None:
    reply = await api.call("POST", "/api/v1/streams/bulk_import", json=body)
    assert (reply.status, reply.body) == (200, {"imported": 0, "total": 0, "errors": []})


@pytest.mark.parametrize(
    ("who", "flag", "status", "error"),
    [
        ("admin", "editors", 403, "Bulk import is not currently available"),  # seeded default
        ("default", "all", 403, "You are not authorized to perform this action"),
        ("default", "off", 403, "Bulk import is not currently available"),  # flag first
        ("admin", "all", 200, None),
    ],
)
async def test_bulk_import_gates(
    api: Api, emu: Emulator, who: str, flag: str, status: int, error: str | None
) -> None:
    await emu.set_flag("stream_bulk_import", flag)
    reply = await api.call("POST", "/api/v1/streams/bulk_import", as_=who, json={"streams": []})
    assert reply.status == status
    if error is not None:
        assert reply.body == {"error": error}


async def test_export(api: Api, emu: Emulator) -> None:
    for status in ("live", "live", "live", "offline", "unknown"):
        await api.create(status=status, title=status)
    archived = await api.create(status="live")
    await emu.archive_stream(archived["id"])
    reply = await api.call("GET", "/api/v1/streams/export", as_="default")
    assert reply.status == 200
    body = reply.body
    assert list(body) == ["exported_at", "count", "streams"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", body["exported_at"])
    assert body["count"] == 5
    item = body["streams"][0]
    assert list(item) == [
        "source",
        "link",
        "status",
        "platform",
        "orientation",
        "kind",
        "city",
        "state",
        "notes",
        "title",
        "posted_by",
        "is_pinned",
        "created_at",
        "last_checked_at",
        "last_live_at",
        "owner_email",
    ]
    assert item["owner_email"] == EMAILS["editor"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", item["created_at"])
    assert item["status"] == "live"
    as_admin = await api.call("GET", "/api/v1/streams/export", as_="admin")
    assert as_admin.body["count"] == 6
    live = await api.call("GET", "/api/v1/streams/export", params={"status": "live"})
    assert live.body["count"] == 3
    not_live = await api.call("GET", "/api/v1/streams/export", params={"notStatus": "live"})
    assert not_live.body["count"] == 2
    paged = await api.call("GET", "/api/v1/streams/export", params={"per_page": "1", "page": "0"})
    assert paged.body["count"] == 5  # no pagination
    await emu.set_flag("stream_export", "admins")
    reply = await api.call("GET", "/api/v1/streams/export", as_="editor")
    assert (reply.status, reply.body) == (
        403,
        {"error": "Export feature is not currently available"},
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/streams"),
        ("POST", "/api/v1/streams"),
        ("GET", "/api/v1/streams/999"),
        ("DELETE", "/api/v1/streams/999/pin"),
        ("GET", "/api/v1/streams/export"),
        ("POST", "/api/v1/streams/bulk_import"),
        ("GET", "/api/v1/streams/1/analytics"),
    ],
)
async def test_maintenance_answers_503_after_authentication(
    api: Api, emu: Emulator, method: str, path: str
) -> None:
    await emu.set_flag("maintenance_mode", "all")
    reply = await api.call(method, path, as_="default", json={})
    assert (reply.status, reply.body) == (503, MAINTENANCE)
    reply = await api.call(method, path, as_=None, json={})
    assert reply.status == 401


async def test_maintenance_for_a_group_is_off(api: Api, emu: Emulator) -> None:
    await emu.set_flag("maintenance_mode", "admins")  # checked without an actor
    assert (await api.call("GET", "/api/v1/streams", as_="admin")).status == 200


async def test_maintenance_blocks_login_but_not_health(api: Api, emu: Emulator) -> None:
    await emu.set_flag("maintenance_mode", "all")
    reply = await api.call("POST", "/api/v1/login", as_=None, json={"user": {}})
    assert (reply.status, reply.body) == (503, MAINTENANCE)
    for path in ("/health", "/health/live", "/health/ready"):
        assert (await api.call("GET", path, as_=None)).status == 200


async def test_health_endpoints(api: Api, emu: Emulator) -> None:
    reply = await api.call("GET", "/health", as_=None)
    assert reply.status == 200
    assert list(reply.body) == ["status", "timestamp", "version"]
    assert reply.body["status"] == "healthy"
    assert reply.body["version"] == "1.0.0"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", reply.body["timestamp"])
    assert (await api.call("GET", "/health/live", as_=None)).body == {"status": "ok"}
    ready = await api.call("GET", "/health/ready", as_=None)
    assert ready.body == {"status": "ready", "database": "connected"}
    emu.set_ready("connection refused")
    ready = await api.call("GET", "/health/ready", as_=None)
    assert (ready.status, ready.body) == (
        503,
        {"status": "not ready", "error": "connection refused"},
    )
    assert (await api.call("GET", "/metrics", as_=None)).status == 404


@pytest.mark.parametrize(
    ("city", "state", "status"),
    [
        ("Austin", "TX", 201),
        ("austin", "tx", 201),
        ("Austin", None, 422),
        ("PARIS", "Ile-de-France", 201),  # a known city without a state matches any state
        ("Austin", "CA", 422),
        ("Springfield", None, 422),
        (None, "TX", 422),
        (None, None, 201),
    ],
)
async def test_location_validation_flag(
    api: Api, emu: Emulator, city: str | None, state: str | None, status: int
) -> None:
    await emu.set_flag("location_validation", "all")
    emu.add_known_city("Austin", "TX")
    emu.add_known_city("Paris")
    body = {"source": "a", "link": "https://x.com", "city": city, "state": state}
    reply = await api.call("POST", "/api/v1/streams", json=body)
    assert reply.status == status
    if status == 422:
        assert reply.body == {
            "error": "City is not a recognized city. Please contact an admin to add it."
        }


async def test_flags_for_individual_users(api: Api, emu: Emulator) -> None:
    await emu.set_flag("stream_export", f"admins,user:{EMAILS['other'].upper()}")
    assert emu.flags()["stream_export"] == f"admins,user:{EMAILS['other']}"
    expected = {"other": 200, "admin": 200, "editor": 403, "default": 403}
    for who, status in expected.items():
        reply = await api.call("GET", "/api/v1/streams/export", as_=who)
        assert reply.status == status, who
