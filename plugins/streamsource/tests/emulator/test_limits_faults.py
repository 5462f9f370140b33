"""Rate limiting (§5), injected faults, the control endpoint and bad requests."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from emulator_helpers import EMAILS, PASSWORD, Api
from multibackend_streamsource.emulator import Emulator, EmulatorConfig, run_emulator

TOO_MANY = {"error": "Too many requests. Please try again later."}


async def test_rate_limit_answers_429_with_the_documented_headers(api: Api, emu: Emulator) -> None:
    emu.set_rate_limit(3, 60)
    statuses = [(await api.call("GET", "/health", as_=None)).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    before = time.time()
    reply = await api.call("GET", "/api/v1/streams")
    assert (reply.status, reply.body) == (429, TOO_MANY)
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.headers["X-RateLimit-Limit"] == "3"
    assert reply.headers["X-RateLimit-Remaining"] == "0"
    reset = int(reply.headers["X-RateLimit-Reset"])
    assert reset % 60 == 0  # windows are aligned to the epoch
    assert before < reset <= before + 60
    assert "Retry-After" not in reply.headers
    # Throttled requests count too; unknown paths are throttled like the rest.
    assert (await api.call("GET", "/nope", as_=None)).status == 429
    counters = emu.counters()
    assert counters.throttled == 2
    assert counters.requests == 5
    assert counters.statuses == {200: 3, 429: 2}


async def test_rate_limit_window_rolls_over(api: Api, emu: Emulator) -> None:
    emu.set_rate_limit(1, 0.4)
    # Start at the beginning of a window so both requests share it.
    await asyncio.sleep(0.4 - time.time() % 0.4 + 0.01)
    assert (await api.call("GET", "/health/live", as_=None)).status == 200
    assert (await api.call("GET", "/health/live", as_=None)).status == 429
    await asyncio.sleep(0.4 - time.time() % 0.4 + 0.01)
    assert (await api.call("GET", "/health/live", as_=None)).status == 200


async def test_localhost_exempt_is_the_real_servers_behaviour() -> None:
    async with (
        run_emulator(rate_limit=1, localhost_exempt=True) as emu,
        aiohttp.ClientSession(emu.base_url) as http,
    ):
        for _ in range(5):
            async with http.get("/health") as resp:
                assert resp.status == 200
        assert emu.counters().throttled == 0


async def test_control_endpoint_is_not_limited_or_faulted(api: Api, emu: Emulator) -> None:
    emu.set_rate_limit(0, 60)
    emu.set_faults(error_rate=1.0)
    async with api.http.get("/__emulator__/counters") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["requests"] == 0
    assert (await api.call("GET", "/health", as_=None)).status == 429


async def test_scripted_failures(api: Api, emu: Emulator) -> None:
    emu.fail_next(3, method="post", path="/api/v1/streams")
    body = {"source": "a", "link": "https://x.com"}
    statuses = []
    for _ in range(4):
        statuses.append((await api.call("POST", "/api/v1/streams", json=body)).status)
        assert (await api.call("GET", "/api/v1/streams")).status == 200
    assert statuses == [500, 500, 500, 201]
    assert len(emu.streams()) == 1
    assert emu.counters().faults == 3


async def test_scripted_failure_after_processing_is_an_unknown_outcome(
    api: Api, emu: Emulator
) -> None:
    emu.fail_next(status=503, path="/api/v1/streams*", after=True, body={"error": "lost"})
    body = {"source": "a", "link": "https://x.com"}
    reply = await api.call("POST", "/api/v1/streams", json=body)
    assert (reply.status, reply.body) == (503, {"error": "lost"})
    assert len(emu.streams()) == 1  # the stream was created all the same


async def test_random_errors_and_latency(api: Api, emu: Emulator) -> None:
    emu.set_faults(error_rate=1.0, error_statuses=[503])
    reply = await api.call("GET", "/api/v1/streams")
    assert (reply.status, reply.body) == (503, {"status": 503, "error": "Service Unavailable"})
    emu.clear_faults()
    emu.set_faults(latency=0.15)
    started = time.monotonic()
    assert (await api.call("GET", "/api/v1/streams")).status == 200
    assert time.monotonic() - started >= 0.15
    emu.clear_faults()
    assert emu.faults() == {
        "latency": 0.0,
        "error_rate": 0.0,
        "error_statuses": [500, 503],
        "scripted": [],
    }


async def test_faults_from_the_config() -> None:
    async with (
        run_emulator(error_rate=0.5, seed=7) as emu,
        aiohttp.ClientSession(emu.base_url) as http,
    ):
        statuses = []
        for _ in range(40):
            async with http.get("/health/live") as resp:
                statuses.append(resp.status)
        assert 5 < sum(s != 200 for s in statuses) < 35
        assert set(statuses) <= {200, 500, 503}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": 200}, "HTTP error status"),
        ({"count": 0}, "count"),
    ],
)
def test_bad_fault_rules_are_refused(emu: Emulator, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        emu.fail_next(**kwargs)  # type: ignore[arg-type]


async def admin(api: Api, method: str, path: str, body: object = None) -> tuple[int, object]:
    async with api.http.request(method, "/__emulator__" + path, json=body) as resp:
        text = await resp.text()
        return resp.status, (await resp.json(content_type=None)) if text else None


async def test_control_endpoint(api: Api, emu: Emulator) -> None:
    status, user = await admin(
        api, "POST", "/users", {"email": "New@Example.com", "password": PASSWORD, "role": "admin"}
    )
    assert (status, user) == (
        201,
        {"id": 5, "email": "new@example.com", "role": "admin", "service_account": False},
    )
    login = await api.call(
        "POST",
        "/api/v1/login",
        as_=None,
        json={"user": {"email": "new@example.com", "password": PASSWORD}},
    )
    assert login.status == 200
    status, _ = await admin(api, "PATCH", "/users/new@example.com", {"role": "default"})
    assert status == 200
    assert emu.user("new@example.com").role == "default"  # type: ignore[union-attr]
    status, token = await admin(api, "POST", f"/users/{EMAILS['editor']}/token")
    assert status == 200
    assert isinstance(token, dict)
    assert token["token"].count(".") == 2
    assert await admin(api, "PUT", "/flags", {"stream_tags": "all"}) == (200, emu.flags())
    assert emu.flags()["stream_tags"] == "all"
    status, _ = await admin(
        api, "POST", "/faults/next", {"count": 2, "method": "GET", "path": "/health"}
    )
    assert status == 201
    assert (await api.call("GET", "/health", as_=None)).status == 500
    assert (await admin(api, "DELETE", "/faults"))[0] == 204
    assert (await api.call("GET", "/health", as_=None)).status == 200
    assert (await admin(api, "PUT", "/faults", {"latency": 0.0, "error_rate": 0.0}))[0] == 200
    status, limit = await admin(api, "PUT", "/rate_limit", {"limit": 10, "period": 5})
    assert (status, limit) == (200, {"limit": 10, "period": 5.0, "localhost_exempt": False})
    stream = await api.create()
    status, archived = await admin(api, "PUT", f"/streams/{stream['id']}/archive")
    assert status == 200
    assert archived["stream"]["is_archived"] is True  # type: ignore[index]
    assert (await api.call("GET", "/api/v1/streams")).body["meta"]["total_count"] == 0
    await admin(api, "DELETE", f"/streams/{stream['id']}/archive")
    assert (await api.call("GET", "/api/v1/streams")).body["meta"]["total_count"] == 1
    status, settings = await admin(api, "PUT", "/settings", {"signup_500": False})
    assert (status, settings) == (200, {"signup_500": False, "ready_error": None})
    status, state = await admin(api, "GET", "")
    assert status == 200
    assert isinstance(state, dict)
    assert state["stream_count"] == 1
    assert state["counters"]["requests"] >= 4
    status, streams = await admin(api, "GET", "/streams")
    assert len(streams["streams"]) == 1  # type: ignore[index]
    assert (await admin(api, "DELETE", "/users/new@example.com"))[0] == 204
    assert emu.user("new@example.com") is None
    assert (await admin(api, "POST", "/reset"))[0] == 204
    assert emu.users() == []
    assert emu.streams() == []
    assert emu.counters().requests == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PUT", "/flags", {"bogus_flag": "all"}, 422),
        ("PUT", "/flags", {"stream_tags": "friends"}, 422),
        ("POST", "/users", {"email": "x@example.com"}, 422),
        ("POST", "/users", {"email": "x@example.com", "password": "p", "role": "root"}, 422),
        ("PATCH", "/users/ghost@example.com", {"role": "admin"}, 404),
        ("PUT", "/streams/999/archive", None, 404),
        ("PUT", "/streams/abc/archive", None, 404),
        ("PUT", "/faults", {"error_rate": 2}, 422),
        ("PUT", "/rate_limit", {"limit": 5, "period": 0}, 422),
        ("PUT", "/settings", {"nope": 1}, 422),
        ("GET", "/nothing-here", None, 404),
    ],
)
async def test_control_endpoint_errors(
    api: Api, method: str, path: str, body: object, status: int
) -> None:
    got, answer = await admin(api, method, path, body)
    assert got == status
    assert isinstance(answer, dict)
    assert "error" in answer


async def test_control_endpoint_bad_json(api: Api) -> None:
    async with api.http.put("/__emulator__/flags", data=b"{") as resp:
        assert resp.status == 400
    async with api.http.put("/__emulator__/flags", json=[1]) as resp:
        assert resp.status == 400


# --- bad requests never crash it ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b'{"source": "a", ', "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b"[1, 2, 3]", "application/json", 422),  # a non-object lands under _json
        (b"null", "application/json", 422),
        (b'"text"', "application/json", 422),
        (b"source=a&link=https%3A%2F%2Fx.com", "application/x-www-form-urlencoded", 201),
        (b"source=a&link[]=https%3A%2F%2Fx.com", "application/x-www-form-urlencoded", 422),
        (b"<xml/>", "application/xml", 422),  # not parsed at all
    ],
)
async def test_odd_bodies(api: Api, data: bytes, content_type: str, status: int) -> None:
    reply = await api.call(
        "POST", "/api/v1/streams", data=data, headers={"Content-Type": content_type}
    )
    assert reply.status == status, reply.text
    assert (await api.call("GET", "/api/v1/streams")).status == 200


async def test_huge_body_answers_413() -> None:
    config = EmulatorConfig(max_body=2048)
    async with run_emulator(config) as emu, aiohttp.ClientSession(emu.base_url) as http:
        await emu.add_user("e@example.com", PASSWORD, "editor")
        headers = {
            "Authorization": f"Bearer {emu.token_for('e@example.com')}",
            "Accept": "application/json",
        }
        body = {"source": "a", "link": "https://x.com", "notes": "n" * 5000}
        async with http.post("/api/v1/streams", json=body, headers=headers) as resp:
            assert resp.status == 413
            assert await resp.json() == {"status": 413, "error": "Content Too Large"}
        body["notes"] = "short"
        async with http.post("/api/v1/streams", json=body, headers=headers) as resp:
            assert resp.status == 201
        assert emu.counters().errors == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("PATCH", "/api/v1/streams"), ("POST", "/api/v1/logout"), ("GET", "/api/v1/x")],
)
async def test_unknown_routes_answer_404(api: Api, method: str, path: str) -> None:
    reply = await api.call(method, path, as_=None)
    assert (reply.status, reply.body) == (404, {"status": 404, "error": "Not Found"})


async def test_disconnect_fault_drops_the_connection(api: Api, emu: Emulator) -> None:
    emu.fail_next(method="POST", path="/api/v1/streams", after=True, disconnect=True)
    body = {"source": "a", "link": "https://x.com"}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.call("POST", "/api/v1/streams", json=body)
    assert len(emu.streams()) == 1  # processed before the connection dropped
    assert (await api.call("GET", "/api/v1/streams")).status == 200
    assert emu.counters().faults == 1


async def test_cors(api: Api, emu: Emulator) -> None:
    emu.set_rate_limit(0, 60)  # preflights are answered before rate limiting
    reply = await api.call(
        "OPTIONS",
        "/api/v1/streams",
        as_=None,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert reply.status == 200
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert reply.headers["Access-Control-Allow-Headers"] == "authorization,content-type"
    assert "PATCH" in reply.headers["Access-Control-Allow-Methods"]
    throttled = await api.call("GET", "/health", headers={"Origin": "https://app.example"})
    assert throttled.status == 429
    assert throttled.headers["Access-Control-Allow-Origin"] == "*"
    assert throttled.headers["Access-Control-Expose-Headers"] == "Authorization"
    plain = await api.call("GET", "/health")
    assert "Access-Control-Allow-Origin" not in plain.headers
