"""The backfill's scoped GIL switch interval (multibackend.migrate.switching)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from multibackend.migrate.switching import shorter_switch_interval


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


def test_lowered_inside_and_put_back_after() -> None:
    with shorter_switch_interval(0.001):
        assert sys.getswitchinterval() == pytest.approx(0.001)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_put_back_after_an_error() -> None:
    with pytest.raises(RuntimeError), shorter_switch_interval(0.001):
        raise RuntimeError("boom")
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_none_or_a_longer_interval_changes_nothing() -> None:
    with shorter_switch_interval(None):
        assert sys.getswitchinterval() == pytest.approx(0.005)
    with shorter_switch_interval(0.01):
        assert sys.getswitchinterval() == pytest.approx(0.005)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_overlapping_blocks_restore_once_the_last_one_leaves() -> None:
    first = shorter_switch_interval(0.001)
    second = shorter_switch_interval(0.002)
    first.__enter__()
    second.__enter__()
    assert sys.getswitchinterval() == pytest.approx(0.001)
    first.__exit__(None, None, None)  # the first leaves while the second still runs
    assert sys.getswitchinterval() == pytest.approx(0.001)
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_value_set_by_someone_else_meanwhile_is_kept() -> None:
    with shorter_switch_interval(0.001):
        sys.setswitchinterval(0.003)
    assert sys.getswitchinterval() == pytest.approx(0.003)


def test_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="greater than 0"), shorter_switch_interval(0):
        pass
    assert sys.getswitchinterval() == pytest.approx(0.005)


async def test_a_backfill_runs_with_the_shorter_interval_and_puts_it_back(
    tmp_path: Path,
) -> None:
    from multibackend.journal.store import JournalStore
    from multibackend.migrate import Backfill
    from multibackend.model import StreamDraft
    from multibackend.registry import load_backend

    seen: list[float] = []
    source = load_backend("memory", name="old")
    target = load_backend("memory", name="new")
    original = target.bulk_import

    async def spy(drafts: list[StreamDraft]) -> object:
        seen.append(sys.getswitchinterval())
        return await original(drafts)

    target.bulk_import = spy  # type: ignore[method-assign]
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/journal.db")
    async with source, target:
        await source.bulk_import(
            [StreamDraft(source="s", link=f"https://twitch.tv/s{i}") for i in range(5)]
        )
        await store.open()
        try:
            result = await Backfill(store, source, target, switch_interval=0.0005).run()
        finally:
            await store.close()
    assert result.copied == 5
    assert seen
    assert all(s == pytest.approx(0.0005) for s in seen)
    assert sys.getswitchinterval() == pytest.approx(0.005)
