"""Differential test (issue 8): the same generated operation sequence applied to ``memory``,
``sql`` on SQLite, ``sql`` on PostgreSQL and ``streamsource`` against the emulator ends in the same
observable state, over the fields each pair stores, with the same outcome for every operation.

Hypothesis runs in a worker thread and hands each sequence to the test's event loop, where the
emulator and the PostgreSQL database live (one of each for the whole test; every example starts
from empty tables).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multibackend_streamsource.emulator import UserSpec, run_emulator

from multibackend.backend import StreamBackend
from multibackend.errors import MultibackendError
from multibackend.model import (
    UNSET,
    Kind,
    Orientation,
    Platform,
    StreamDraft,
    StreamPatch,
    StreamQuery,
    StreamStatus,
)
from multibackend.registry import load_backend
from multibackend.testing.compare import STAMPED_FIELDS

EDITOR = UserSpec(email="diff@example.com", password="Diff-Passw0rd", role="editor")

# Text as people type it, plus the odd characters that trip storage layers.
TEXT = st.one_of(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from(["Austin", "Zürich", "東京", "  padded  ", "e\u0301", "🎥 live", "'; --"]),
)
LINKS = st.sampled_from(
    [
        "https://twitch.tv/a",
        "https://www.tiktok.com/@b",
        "http://example.com/c?x=1",
        " https://youtube.com/d ",
        "https://ÿ.example/é",
    ]
)


def maybe(strategy: st.SearchStrategy[Any], *, nullable: bool = True) -> st.SearchStrategy[Any]:
    options = [st.just(UNSET), strategy]
    if nullable:
        options.append(st.none())
    return st.one_of(*options)


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "status": maybe(st.sampled_from(list(StreamStatus)), nullable=False),
    "platform": maybe(st.sampled_from(list(Platform))),
    "orientation": maybe(st.sampled_from(list(Orientation))),
    "kind": maybe(st.sampled_from(list(Kind)), nullable=False),
    "city": maybe(TEXT),
    "state": maybe(TEXT),
    "notes": maybe(TEXT),
    "title": maybe(TEXT),
}

CREATE = st.builds(
    lambda source, link, rest: ("create", {"source": source, "link": link, **rest}),
    TEXT,
    LINKS,
    st.fixed_dictionaries({}, optional=FIELDS),
)
UPDATE = st.builds(
    lambda i, rest: ("update", i, rest),
    st.integers(0, 7),
    st.fixed_dictionaries({}, optional={**FIELDS, "source": TEXT, "link": LINKS}),
)
PIN = st.builds(lambda i, on: ("pin", i, on), st.integers(0, 7), st.booleans())
DELETE = st.builds(lambda i: ("delete", i), st.integers(0, 7))
GET = st.builds(lambda i: ("get", i), st.integers(0, 7))
OPS = st.lists(st.one_of(CREATE, CREATE, UPDATE, UPDATE, PIN, DELETE, GET), max_size=14)


@attrs.define
class Subject:
    """One backend under test and its ids, by logical stream (the n-th create)."""

    backend: StreamBackend
    ids: list[Any] = attrs.field(factory=list)


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not UNSET}


async def apply(op: tuple[Any, ...], subject: Subject) -> str:
    """Run ``op`` on one backend; return its outcome ("ok" or the error class)."""
    b = subject.backend
    try:
        if op[0] == "create":
            stream = await b.create_stream(StreamDraft(**_clean(op[1])))
            subject.ids.append(stream.id)
            return "ok"
        index = op[1]
        if index >= len(subject.ids):
            return "skip"
        sid = subject.ids[index]
        if op[0] == "update":
            await b.update_stream(sid, StreamPatch(**_clean(op[2])))
        elif op[0] == "pin":
            await b.set_pinned(sid, op[2])
        elif op[0] == "delete":
            await b.delete_stream(sid)
        else:
            await b.get_stream(sid)
        return "ok"
    except MultibackendError as exc:
        if op[0] == "create":
            subject.ids.append(None)  # keep logical numbering aligned across backends
        return type(exc).__name__


def valid(op: tuple[Any, ...]) -> bool:
    """Whether the model accepts the op's input (refused input never reaches a backend)."""
    try:
        if op[0] == "create":
            StreamDraft(**_clean(op[1]))
        elif op[0] == "update":
            StreamPatch(**_clean(op[2]))
    except MultibackendError:
        return False
    return True


async def state(subject: Subject) -> dict[int, Any]:
    """Logical index -> the stream, for every stream the backend holds."""
    by_id = {str(s.id): s async for s in subject.backend.iter_streams(StreamQuery())}
    out = {}
    for n, sid in enumerate(subject.ids):
        if sid is not None and str(sid) in by_id:
            out[n] = by_id.pop(str(sid))
    assert not by_id, f"{subject.backend.name} holds streams no create made: {list(by_id)}"
    return out


async def run_sequence(ops: list[tuple[Any, ...]], make: Callable[[], Any]) -> None:
    subjects = await make()
    try:
        for step, op in enumerate(ops):
            if not valid(op):
                continue
            outcomes = {s.backend.name: await apply(op, s) for s in subjects}
            assert len(set(outcomes.values())) == 1, (step, op, outcomes)
        states = {s.backend.name: await state(s) for s in subjects}
        names = list(states)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                assert states[a].keys() == states[b].keys(), (a, b)
                fa = next(s.backend.fields for s in subjects if s.backend.name == a)
                fb = next(s.backend.fields for s in subjects if s.backend.name == b)
                for field in sorted((set(fa) & set(fb)) - STAMPED_FIELDS):
                    for n in states[a]:
                        va, vb = getattr(states[a][n], field), getattr(states[b][n], field)
                        assert va == vb, (a, b, n, field, va, vb)
    finally:
        for s in subjects:
            await s.backend.close()


async def test_backends_agree_on_generated_sequences(tmp_path: Path, pg_url: str) -> None:
    loop = asyncio.get_running_loop()
    counter = iter(range(10**6))

    async with run_emulator(users=[EDITOR], localhost_exempt=True) as emu:

        async def make() -> list[Subject]:
            n = next(counter)
            await emu.reset()
            await emu.add_user(EDITOR.email, EDITOR.password, role=EDITOR.role)
            backends: list[StreamBackend] = [
                load_backend("memory", name="memory"),
                load_backend(
                    "sql", name="sqlite", url=f"sqlite:///{tmp_path}/d{n}.db", create_schema=True
                ),
                load_backend(
                    "streamsource",
                    name="streamsource",
                    base_url=emu.base_url,
                    email=EDITOR.email,
                    password=EDITOR.password,
                    requests_per_minute=100_000,
                ),
                load_backend(
                    "sql", name="postgresql", url=pg_url, table=f"s{n}", create_schema=True
                ),
            ]
            for b in backends:
                await b.open()
            return [Subject(b) for b in backends]

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            database=None,
        )
        @given(OPS)
        def check(ops: list[tuple[Any, ...]]) -> None:
            asyncio.run_coroutine_threadsafe(run_sequence(ops, make), loop).result(timeout=60)

        await asyncio.to_thread(check)
