"""Verify's side table: B's rows on disk, matched with chunks of A through the id map."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from multibackend.journal.store import JournalStore
from multibackend.migrate import side
from multibackend.migrate.side import SideTable, journal_file, load_row

ROW = ("Austin", 1_700_000_000, False, "live", None, "title")


async def _journal(tmp_path: Path) -> JournalStore:
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/journal.db")
    await store.open()
    return store


async def test_a_sqlite_journal_file_is_attached_and_read_fresh_by_every_match(
    tmp_path: Path,
) -> None:
    """Each match reads the id map as it is now: a mapping recorded after the side table was
    opened (and after B's rows were written) is seen by the next match, not hidden by an old
    read snapshot."""
    store = await _journal(tmp_path)
    try:
        table = SideTable(
            journal=journal_file(store.engine.url), entity_type="stream", a_name="a", b_name="b"
        )
        try:
            assert table.attached
            table.add([(20, ROW)])
            assert table.translate(["1", "2"]) == [None, None]
            async with store.begin() as conn:
                await store.map_id(conn, "stream", "k1", "a", 1)
                await store.map_id(conn, "stream", "k1", "b", 20)
                await store.map_id(conn, "stream", "k2", "a", 2)
                await store.map_id(conn, "stream", "k2", "b", "x")  # mapped, B's walk missed it
                await store.map_id(conn, "stream", "k3", "a", 3)
                await store.map_id(conn, "stream", "k3", "b", 2**70)
            table.add([(2**70, ROW)])
            assert table.translate(["1", "2", "3"]) == [20, "x", str(2**70)]
            (one, x, big) = table.match_b([20, "x", 2**70])
            assert one[0] is not None
            assert load_row(one[1], one[2]) == ROW
            assert x == (None, None, None)
            assert load_row(big[1], big[2]) == ROW
            table.mark([one[0], big[0]])
            table.add([(21, ROW), ("21", ROW)])  # an int id and a text id are two ids
            assert [r[1] for r in table.unseen(0, 10)] == [21, "21"]
        finally:
            table.close()
        assert not table.path.exists()
    finally:
        await store.close()


def test_only_a_plain_sqlite_file_is_attached(tmp_path: Path) -> None:
    assert journal_file(make_url("postgresql+asyncpg://u@127.0.0.1/db")) is None
    assert journal_file(make_url("sqlite+aiosqlite://")) is None
    assert journal_file(make_url("sqlite+aiosqlite:///:memory:")) is None
    assert journal_file(make_url(f"sqlite+aiosqlite:///{tmp_path}/absent.db")) is None
    table = SideTable(journal=str(tmp_path / "absent.db"))
    try:
        assert not table.attached
    finally:
        table.close()


@pytest.mark.parametrize("use_json", [True, False])
def test_rows_come_back_as_written_in_the_order_asked(
    use_json: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values marshal cannot write are pickled; ids absent from B come back as None; the answer
    follows the order of the ids asked, over several VALUES lists without JSON functions."""
    monkeypatch.setattr(side, "_VALUES_CHUNK", 3)
    table = SideTable(use_json=use_json)
    try:
        odd = ("Austin", Decimal("1.50"), True, None, "b\udc80d", -(2**70))
        rows = [(i, ("s", i, i % 2 == 0, None)) for i in range(10)]
        table.add([*rows, ("odd", odd), (2**70, rows[0][1])])
        asked = ["odd", 9, "nope", 0, 5, 1, "2", 3, 2**70]
        found = table.match_b(asked)
        assert [load_row(data, pdata) for _, data, pdata in found] == [
            odd,
            rows[9][1],
            None,
            rows[0][1],
            rows[5][1],
            rows[1][1],
            None,  # the text "2" is not the int 2
            rows[3][1],
            rows[0][1],  # an id beyond SQLite's integers is kept as text
        ]
        table.mark([rowid for rowid, _, _ in found if rowid is not None])
        assert [r[1] for r in table.unseen(0, 100)] == [2, 4, 6, 7, 8]
    finally:
        table.close()


def test_id_order_helpers_of_the_walk_in_step() -> None:
    """Ints before text, ints by value, text by code point: the order scan_streams walks in."""
    from multibackend.migrate.verify import _after, _highest

    assert _after(10, 9)
    assert not _after(9, 9)
    assert _after("a", 10**30)
    assert not _after(3, "1")
    assert _after("b", "a")
    assert _highest({3: 0, 10: 1, 2: 2}) == 10
    assert _highest({"10": 0, "9": 1}) == "9"
    assert _highest({5: 0, "a": 1, 700: 2}) == "a"
