"""build_snapshot works out once per (primary, target) field sets where each field comes from;
it must give exactly what the field-by-field rule of DESIGN.md §5 gives."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from multibackend.journal.snapshot import build_snapshot
from multibackend.model import (
    PRESERVABLE_TIMESTAMPS,
    STREAM_FIELDS,
    WRITABLE_FIELDS,
    Kind,
    Orientation,
    Platform,
    Stream,
    StreamStatus,
)


def reference(
    stream: Stream,
    primary_fields: Iterable[str],
    target_fields: Iterable[str],
    given: Mapping[str, Any],
) -> dict[str, list[Any]]:
    """The rule, spelled out field by field (the implementation before the plan cache)."""

    def encode(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, Enum):
            return value.value
        return value

    primary = set(primary_fields)
    out: dict[str, list[Any]] = {}
    for name in target_fields:
        if name not in WRITABLE_FIELDS | PRESERVABLE_TIMESTAMPS:
            continue
        if name in primary or (
            name in PRESERVABLE_TIMESTAMPS and getattr(stream, name) is not None
        ):
            out[name] = [encode(getattr(stream, name))]
        elif name in given:
            out[name] = [encode(given[name])]
    return out


fields = st.frozensets(st.sampled_from(STREAM_FIELDS))
times = st.none() | st.datetimes(timezones=st.just(UTC))
text = st.none() | st.text(max_size=5)


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    return Stream(
        id=draw(st.integers(1, 10**6) | st.text(min_size=1, max_size=5)),
        source=draw(text),
        link="https://example.com/x",
        status=draw(st.sampled_from(StreamStatus)),
        is_pinned=draw(st.booleans()),
        platform=draw(st.none() | st.sampled_from(Platform)),
        orientation=draw(st.none() | st.sampled_from(Orientation)),
        kind=draw(st.sampled_from(Kind)),
        city=draw(text),
        notes=draw(text),
        title=draw(text),
        last_checked_at=draw(times),
        last_live_at=draw(times),
        created_at=draw(times),
        updated_at=draw(times),
    )


values = st.none() | st.text(max_size=3) | st.booleans() | st.sampled_from(Kind) | times


@settings(max_examples=300, deadline=None)
@given(
    stream=streams(),
    primary=fields,
    target=fields,
    write=st.dictionaries(st.sampled_from(STREAM_FIELDS), values, max_size=6),
)
def test_the_cached_plan_gives_what_the_rule_gives(
    stream: Stream, primary: frozenset[str], target: frozenset[str], write: dict[str, Any]
) -> None:
    got = build_snapshot(stream, primary_fields=primary, target_fields=target, given=write)
    assert got == reference(stream, primary, target, write)
    # Plain sets and lists name the same fields (callers do not all pass frozensets).
    again = build_snapshot(
        stream, primary_fields=set(primary), target_fields=sorted(target), given=write
    )
    assert again == got
