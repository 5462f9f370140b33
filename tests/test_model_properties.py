"""Property-based tests of model validation (issue 8, bad input): whatever a caller passes, the
model either accepts it as documented or refuses it with ValidationFailed naming the field —
never another exception, never a silently changed value."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multibackend.errors import ValidationFailed
from multibackend.model import (
    UNSET,
    Kind,
    Orientation,
    Platform,
    StreamDraft,
    StreamPatch,
    StreamQuery,
    StreamStatus,
    check_link,
)

# Anything a JSON body, a TOML file or a careless caller could hand over.
ANYTHING = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=40),
        st.binary(max_size=10),
        st.datetimes(),
        st.datetimes(timezones=st.just(UTC)),
        st.sampled_from(["live", "Live", "TikTok", "vertical", "video", "", " ", "https://x.io"]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(), inner)),
    max_leaves=5,
)

DRAFT_FIELDS = [f.name for f in attrs.fields(StreamDraft)]
PATCH_FIELDS = [f.name for f in attrs.fields(StreamPatch)]
ENUMS = {
    "status": StreamStatus,
    "platform": Platform,
    "orientation": Orientation,
    "kind": Kind,
}


def attempt(build: Any) -> tuple[Any, ValidationFailed | None]:
    """``build()``'s value, or the ValidationFailed it raised (anything else propagates)."""
    try:
        return build(), None
    except ValidationFailed as exc:
        return None, exc


def check_accepted(obj: Any, given_values: dict[str, Any]) -> None:
    """What the model kept is what was given, as documented (enums parsed, links stripped)."""
    for name, raw in given_values.items():
        kept = getattr(obj, name)
        if name in ENUMS and raw == "" and name in ("platform", "orientation"):
            assert kept is None  # Rails assigns nil for "" to a nullable enum (contract §1.2)
        elif name in ENUMS and raw is not None:
            assert isinstance(kept, ENUMS[name])
        elif name == "link":
            assert kept == raw.strip()
            assert kept.startswith(("http://", "https://"))
        elif name == "is_pinned":
            assert kept is raw
        else:
            assert kept == raw


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(DRAFT_FIELDS), value=ANYTHING)
def test_a_draft_accepts_or_names_the_field(field: str, value: Any) -> None:
    base: dict[str, Any] = {"source": "alice", "link": "https://twitch.tv/alice"}
    base[field] = value
    draft, exc = attempt(lambda: StreamDraft(**base))
    if exc is not None:
        assert exc.field == field, (exc.field, field, str(exc))
        assert str(exc).startswith(f"{field}: ")
        return
    check_accepted(draft, {field: value})
    assert draft.given()[field] is not UNSET


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(PATCH_FIELDS), value=ANYTHING)
def test_a_patch_accepts_or_names_the_field(field: str, value: Any) -> None:
    patch, exc = attempt(lambda: StreamPatch(**{field: value}))
    if exc is not None:
        assert exc.field == field, (exc.field, field, str(exc))
        return
    check_accepted(patch, {field: value})
    assert set(patch.given()) == {field}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.from_regex(r"\s*https?://[^\s]{1,20}\s*")))
def test_check_link_follows_the_servers_rule_and_strips(text: str) -> None:
    # The server's rule (contract §1.2) is Ruby's unanchored, case-sensitive URI regexp: a
    # value passes when it contains "http:" or "https:" followed by a URI character.
    link, exc = attempt(lambda: check_link(text))
    if exc is not None:
        assert exc.field == "link"
        assert exc.rule in {"required", "http_url"}
        assert not re.search(r"https?:[/A-Za-z0-9\-_.!~*'();?:@&=+$,%]", text.strip())
        return
    assert link == text.strip()
    assert "http:" in link or "https:" in link


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(["status", "not_status", "is_pinned", "sort", "page", "per_page"]),
    value=ANYTHING,
)
def test_a_query_accepts_or_names_the_field(field: str, value: Any) -> None:
    _, exc = attempt(lambda: StreamQuery(**{field: value}))
    if exc is not None:
        assert exc.field is not None
        assert field.split("_")[-1] in exc.field or exc.field in field, (exc.field, field)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=255).filter(lambda s: s != ""))
def test_any_nonempty_source_up_to_255_characters_is_kept_exactly(source: str) -> None:
    assert StreamDraft(source=source, link="https://a.io").source == source


@pytest.mark.parametrize("n", [256, 10_000])
def test_overlong_sources_are_refused(n: int) -> None:
    with pytest.raises(ValidationFailed) as info:
        StreamDraft(source="x" * n, link="https://a.io")
    assert info.value.rule == "max_length"


def test_naive_and_aware_times() -> None:
    aware = datetime(2026, 1, 1, tzinfo=UTC)
    assert StreamDraft(source="a", link="https://a.io", created_at=aware).created_at == aware
    with pytest.raises(ValidationFailed) as info:
        StreamDraft(source="a", link="https://a.io", created_at=datetime(2026, 1, 1))
    assert info.value.field == "created_at"
