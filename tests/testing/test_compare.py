"""compare_backends: what it reports for each way two backends can differ."""

from __future__ import annotations

from multibackend.model import StreamDraft, StreamPatch
from multibackend.registry import load_backend
from multibackend.testing.compare import compare_backends, compared_fields


async def test_every_kind_of_difference_is_reported() -> None:
    async with load_backend("memory", name="a") as a, load_backend("memory", name="b") as b:
        draft = StreamDraft(source="s", link="https://x.io", title="t", notes="n")
        a1, a2, a3 = [await a.create_stream(draft) for _ in range(3)]
        b1, b2, b_extra = [await b.create_stream(draft) for _ in range(3)]
        assert await compare_backends(a, b, {a1.id: b1.id, a2.id: b2.id, a3.id: b_extra.id}) == []

        await b.update_stream(b1.id, StreamPatch(title="other", notes=None))
        diffs = await compare_backends(a, b, {a1.id: b1.id, a2.id: b2.id, 999: b1.id})
        found = sorted((d.kind, d.field) for d in diffs)
        assert found == [
            ("mismatch", "notes"),
            ("mismatch", "title"),
            ("missing", None),  # a3 has no copy
            ("shared", None),  # b1 is the copy of a1 and of 999
            ("stale", None),  # 999 is mapped but a does not hold it
            ("unexpected", None),  # b_extra is no stream's copy
        ]
        mismatch = next(d for d in diffs if d.field == "title")
        assert (mismatch.a_value, mismatch.b_value) == ("t", "other")
        assert "title: 't' != 'other'" in str(mismatch)


async def test_fields_default_to_shared_ones_without_stamps() -> None:
    a = load_backend("memory", name="a")
    legacy = load_backend("sql", name="l", url="sqlite://", schema="streamsource-legacy")
    fields = compared_fields(a, legacy)
    assert "notes" not in fields  # the legacy table has no notes
    assert "created_at" not in fields
    assert "posted_by" not in fields
    assert {"source", "link", "status", "is_pinned", "title"} <= fields
