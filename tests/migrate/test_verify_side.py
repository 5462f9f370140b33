"""Verify's side table: B's rows on disk, matched with chunks of A through the id map."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from multibackend.journal.store import JournalStore
from multibackend.migrate import side
from multibackend.migrate.side import SideTable, journal_file

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
            table.add([("20", True, ROW)])
            assert table.match_a(["1", "2"]) == [(None, None, None, None)] * 2
            async with store.begin() as conn:
                await store.map_id(conn, "stream", "k1", "a", 1)
                await store.map_id(conn, "stream", "k1", "b", 20)
                await store.map_id(conn, "stream", "k2", "a", 2)
                await store.map_id(conn, "stream", "k2", "b", "x")  # mapped, B's walk missed it
            (one, two) = table.match_a(["1", "2"])
            assert one[0:2] == ("20", 1)
            assert one[2] is not None
            assert one[3] == ROW
            assert two == ("x", 0, None, None)
            table.mark([one[2]])
            table.add([("21", True, ROW)])
            assert [r[1] for r in table.unseen(0, 10)] == ["21"]
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
        rows = [(str(i), True, ("s", i, i % 2 == 0, None)) for i in range(10)]
        table.add([*rows, ("odd", False, odd)])
        asked = ["odd", "9", "nope", "0", "5", "1", "2", "3"]
        found = table.match_b(asked)
        assert [row for _, row in found] == [
            odd,
            rows[9][2],
            None,
            rows[0][2],
            rows[5][2],
            rows[1][2],
            rows[2][2],
            rows[3][2],
        ]
        table.mark([rowid for rowid, _ in found if rowid is not None])
        assert sorted(r[1] for r in table.unseen(0, 100)) == ["4", "6", "7", "8"]
    finally:
        table.close()
