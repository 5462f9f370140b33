"""Bad requests never crash the emulator: random bodies and parameters get documented answers."""

from __future__ import annotations

import random
from typing import Any

from emulator_helpers import Api
from multibackend_streamsource.emulator import Emulator

KEYS = [
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
    "location_id",
    "location",
    "is_pinned",
    "user",
    "streams",
    "email",
    "password",
    "_json",
]
ENUMISH = ["live", "Live", "LIVE", "tiktok", "TikTok", "vertical", "web", "bogus", "", " "]


def value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 2 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 7, 10**30, 1.5, float(rng.randrange(100))])
    if choice == 3:
        return rng.choice(ENUMISH)
    if choice == 4:
        return rng.choice(["https://x.com", "http://", "not a url", "\x00", "é" * 300, "a" * 256])
    if choice == 5:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(12)))
    if choice == 6:
        return [value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(KEYS): value(rng, depth + 1) for _ in range(rng.randrange(4))}


def body(rng: random.Random) -> Any:
    if rng.random() < 0.1:
        return value(rng)
    return {rng.choice(KEYS): value(rng) for _ in range(rng.randrange(6))}


async def test_random_requests_get_documented_answers(api: Api, emu: Emulator) -> None:
    await emu.set_flag("stream_bulk_import", "all")
    rng = random.Random(20260404)
    stream = await api.create()
    targets = [
        ("POST", "/api/v1/streams", {201, 403, 422, 500}),
        ("PATCH", f"/api/v1/streams/{stream['id']}", {200, 403, 422, 500}),
        ("PUT", f"/api/v1/streams/{stream['id']}", {200, 403, 422, 500}),
        ("POST", "/api/v1/streams/bulk_import", {200, 403, 500}),
        ("POST", "/api/v1/login", {200, 401}),
        ("POST", "/api/v1/signup", {400, 422, 500}),
        ("GET", "/api/v1/streams", {200, 404, 500}),
        ("GET", "/api/v1/streams/export", {200}),
    ]
    for i in range(400):
        method, path, allowed = targets[i % len(targets)]
        who = rng.choice(["default", "editor", "admin"])
        if method == "GET":
            params = {
                rng.choice(["status", "notStatus", "is_pinned", "sort", "page", "per_page"]): str(
                    value(rng)
                )
                for _ in range(rng.randrange(4))
            }
            reply = await api.call(method, path, as_=who, params=params)
        else:
            reply = await api.call(method, path, as_=who, json=body(rng))
        assert reply.status in allowed, (method, path, reply.status, reply.text)
        assert reply.body is not None, reply.text
    assert emu.counters().errors == 0
    assert (await api.call("GET", "/health", as_=None)).status == 200
