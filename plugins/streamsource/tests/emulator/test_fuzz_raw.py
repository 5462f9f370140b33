"""Raw-body fuzzing of the emulator (issue 8, bad input): malformed JSON, wrong types, huge and
deeply nested bodies, odd unicode, bodies without their envelope, any content type, any
credentials. Every request gets a documented answer, the emulator never raises an unexpected
exception (``counters().errors``: the documented 500s, like an invalid enum, are not errors),
and it stays healthy."""

from __future__ import annotations

import asyncio
import io
import json

from emulator_helpers import Api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multibackend_streamsource.emulator import Emulator

JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        st.sampled_from(["live", "Live", "bogus", "", "https://x.io", "\u202e\u0000🎥"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
STREAM_KEYS = st.sampled_from(
    ["source", "link", "status", "platform", "kind", "city", "title", "is_pinned", "location_id"]
)
BODIES = st.one_of(
    JSONISH.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(STREAM_KEYS, JSONISH, max_size=4).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(STREAM_KEYS, JSONISH, max_size=4).map(
        lambda v: json.dumps({"stream": v}).encode()
    ),
    st.dictionaries(STREAM_KEYS, JSONISH, max_size=4).map(
        lambda v: json.dumps({"streams": [v]}).encode()
    ),
    st.binary(max_size=80),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b"",
            b"{",
            b'{"stream": {"source": ',
            b"<deep-array>",
            b"<deep-object>",
            b"<huge>",  # over max_body: 413
            b'{"source": "\\ud800", "link": "https://x.io"}',
            b'{"user": {"email": "a@b.c", "password": ["x"]}}',
            b"source=a&link=https%3A%2F%2Fx.io&status[]=live",
        ]
    ),
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "multipart/x", ""]
)
TARGETS = [
    ("POST", "/api/v1/streams"),
    ("PATCH", "/api/v1/streams/{id}"),
    ("PUT", "/api/v1/streams/{id}"),
    ("PUT", "/api/v1/streams/{id}/pin"),
    ("POST", "/api/v1/streams/bulk_import"),
    ("POST", "/api/v1/login"),
    ("POST", "/api/v1/signup"),
    ("DELETE", "/api/v1/streams/{id}"),
    ("GET", "/api/v1/streams"),
]
# Big bodies are built per request (hypothesis would print them whole).
EXPANDED = {
    b"<deep-array>": b"[" * 20_000 + b"]" * 20_000,
    b"<deep-object>": b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    b"<huge>": b'{"source": "' + b"x" * (1024 * 1024 + 10) + b'"}',
}
DOCUMENTED = {200, 201, 204, 400, 401, 403, 404, 413, 422, 500}


async def test_raw_bodies_get_documented_answers(api: Api, emu: Emulator) -> None:
    await emu.set_flag("stream_bulk_import", "all")
    stream = await api.create()
    loop = asyncio.get_running_loop()
    seen: set[int] = set()

    async def one(target: int, body: bytes, ctype: str, who: str | None) -> None:
        method, path = TARGETS[target]
        headers = {"Content-Type": ctype} if ctype else {}
        if who == "garbage":
            headers["Authorization"] = "Bearer not.a.token"
            who = None
        body = EXPANDED.get(body, body)
        data: bytes | io.BytesIO = io.BytesIO(body) if len(body) > 65536 else body
        before = emu.counters().errors
        reply = await api.call(
            method,
            path.format(id=stream["id"]),
            as_=who,
            data=data,
            headers=headers,
            accept_json=True,
        )
        seen.add(reply.status)
        assert reply.status in DOCUMENTED, (method, path, reply.status, reply.text[:200])
        assert emu.counters().errors == before, (method, path, body[:120], reply.text[:200])

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(
        target=st.integers(0, len(TARGETS) - 1),
        body=BODIES,
        ctype=CONTENT_TYPES,
        who=st.sampled_from(["editor", "admin", "default", None, "garbage"]),
    )
    def check(target: int, body: bytes, ctype: str, who: str | None) -> None:
        asyncio.run_coroutine_threadsafe(one(target, body, ctype, who), loop).result(timeout=30)

    await asyncio.to_thread(check)
    assert {400, 401} <= seen, seen  # malformed bodies and bad credentials were exercised
    assert (await api.call("GET", "/health", as_=None)).status == 200


async def test_json_nested_deeper_than_rails_allows_is_a_400(api: Api, emu: Emulator) -> None:
    # Found by the fuzz test above: the decoder's RecursionError became an unexpected 500.
    headers = {"Content-Type": "application/json"}
    for depth, status in ((100, 422), (101, 400), (50_000, 400)):
        body = b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)
        reply = await api.call("POST", "/api/v1/streams", data=body, headers=headers)
        assert reply.status == status, (depth, reply.text[:200])
    assert emu.counters().errors == 0
