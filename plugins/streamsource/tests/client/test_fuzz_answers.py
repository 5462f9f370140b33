"""Fuzzing the client with what a broken or hostile server could answer (issue 8, bad input):
malformed JSON, wrong types, missing envelopes, huge and deeply nested bodies, odd unicode,
any status. Whatever comes back, every operation returns a valid value or raises one of our
errors (MultibackendError) — never another exception, never a hang.

A real aiohttp server on 127.0.0.1 answers each request with the example hypothesis drew.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multibackend_streamsource.backend import StreamSourceBackend

from multibackend.errors import MultibackendError, Unavailable
from multibackend.model import Page, Stream, StreamDraft, StreamPatch, StreamQuery

from .conftest import make_token, options

GOOD = {
    "id": 1,
    "source": "alice",
    "link": "https://twitch.tv/alice",
    "status": "live",
    "is_pinned": False,
    "created_at": "2026-01-01T00:00:00.000Z",
    "updated_at": "2026-01-01T00:00:00.000Z",
    "kind": "video",
}

JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.sampled_from(["live", "Live", "tiktok", "", "2026-01-01T00:00:00Z", "not a date"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=12,
)
# A good stream with one field spoiled, or dropped.
SPOILED_STREAM = st.builds(
    lambda key, value, drop: (
        {k: v for k, v in GOOD.items() if k != key} if drop else {**GOOD, key: value}
    ),
    st.sampled_from([*GOOD, "user", "platform", "city", "last_live_at"]),
    JSONISH,
    st.booleans(),
)
BODIES = st.one_of(
    JSONISH.map(lambda v: json.dumps(v).encode()),
    SPOILED_STREAM.map(lambda v: json.dumps(v).encode()),
    SPOILED_STREAM.map(
        lambda v: json.dumps({"streams": [v], "meta": {"total_count": "x"}}).encode()
    ),
    st.builds(
        lambda v, meta: json.dumps({"streams": v, "meta": meta}).encode(),
        st.lists(SPOILED_STREAM, max_size=3),
        JSONISH,
    ),
    st.binary(max_size=64),  # not JSON at all
    st.sampled_from(
        [
            b"",
            b"{",
            b'{"streams": [',
            b"<deep-array>",
            b"<deep-object>",
            b"<big>",
            b'{"error": "\\ud800 lone surrogate"}',
            '{"error": "\u202eRTL \u0000 NUL 🎥"}'.encode(),
            b"\xff\xfe\x00\x00",
        ]
    ),
)
# Big bodies are built per answer (hypothesis would print them whole).
EXPANDED = {
    b"<deep-array>": b"[" * 5000 + b"]" * 5000,
    b"<deep-object>": b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b"<big>": json.dumps({"streams": [GOOD] * 3000, "meta": {}}).encode(),
}
STATUSES = st.sampled_from([200, 200, 200, 201, 204, 301, 400, 401, 403, 404, 409, 422, 500, 503])
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/html", "text/plain", ""]
)


class Answering:
    """Answers every request with the current (status, body, content type)."""

    def __init__(self) -> None:
        self.answer: tuple[int, bytes, str] = (200, b"{}", "application/json")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        status, body, ctype = self.answer
        if status == 204:
            return web.Response(status=204)
        headers = {"Content-Type": ctype} if ctype else {}
        return web.Response(status=status, body=body, headers=headers)


OPERATIONS = [
    ("get_stream", lambda b: b.get_stream(1), Stream),
    ("list_streams", lambda b: b.list_streams(StreamQuery()), Page),
    ("create", lambda b: b.create_stream(StreamDraft(source="a", link="https://a.io")), Stream),
    ("update", lambda b: b.update_stream(1, StreamPatch(title="t")), Stream),
    ("pin", lambda b: b.set_pinned(1, True), Stream),
    ("delete", lambda b: b.delete_stream(1), type(None)),
]


async def serve(server: Answering) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def test_an_answer_nested_too_deep_to_decode_is_unavailable() -> None:
    # Found by the fuzz test below: json.loads raised RecursionError, which escaped the client.
    server = Answering()
    server.answer = (200, b"[" * 100_000 + b"]" * 100_000, "application/json")
    runner, port = await serve(server)
    opts = options(f"http://127.0.0.1:{port}", token=make_token(), max_retries=0)
    try:
        async with StreamSourceBackend("ss", opts) as backend:
            with pytest.raises(Unavailable):
                await backend.get_stream(1)
    finally:
        await runner.cleanup()


async def test_any_answer_gives_a_value_or_our_error() -> None:
    server = Answering()
    runner, port = await serve(server)
    loop = asyncio.get_running_loop()
    opts = options(
        f"http://127.0.0.1:{port}",
        token=make_token(),
        max_retries=0,
        timeout=5.0,
        max_rate_limit_wait=0.0,
    )
    backend = StreamSourceBackend("ss", opts)
    await backend.open()
    unexpected: list[str] = []
    outcomes: Counter[str] = Counter()

    async def one(op: int, answer: tuple[int, bytes, str]) -> None:
        server.answer = (answer[0], EXPANDED.get(answer[1], answer[1]), answer[2])
        name, call, kind = OPERATIONS[op]
        try:
            result = await asyncio.wait_for(call(backend), timeout=10)
        except MultibackendError:
            outcomes["error"] += 1
            return
        except TimeoutError:
            unexpected.append(f"{name} hung on {answer[0]} {answer[1][:80]!r}")
            return
        except Exception as exc:  # the finding: anything else escaped the client
            unexpected.append(f"{name}: {type(exc).__name__}: {exc} on {answer[1][:80]!r}")
            return
        outcomes["value"] += 1
        if not isinstance(result, kind):
            unexpected.append(f"{name} returned {type(result).__name__} on {answer[1][:80]!r}")

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(
        op=st.integers(0, len(OPERATIONS) - 1),
        answer=st.tuples(STATUSES, BODIES, CONTENT_TYPES),
    )
    # Both paths every run, whatever the draw: a well-formed answer and a server error.
    @example(op=0, answer=(200, json.dumps({"stream": GOOD}).encode(), "application/json"))
    @example(op=0, answer=(500, b'{"error": "boom"}', "application/json"))
    # A page whose meta holds no number: a ValueError escaped the client once.
    @example(
        op=1, answer=(200, b'{"streams": [], "meta": {"total_count": "x"}}', "application/json")
    )
    def check(op: int, answer: tuple[int, bytes, str]) -> None:
        asyncio.run_coroutine_threadsafe(one(op, answer), loop).result(timeout=30)

    try:
        await asyncio.to_thread(check)
    finally:
        await backend.close()
        await runner.cleanup()
    assert unexpected == [], "\n".join(unexpected[:10])
    # Both paths were exercised.
    assert outcomes["value"] > 0, outcomes
    assert outcomes["error"] > 0, outcomes
