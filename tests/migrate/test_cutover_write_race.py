"""A cutover change that commits after a write was planned but before its journal transaction:
the write must notice it in that transaction and follow the new roles (issue 7's "managers see
a phase change before their next write", made exact by the in-transaction version check)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from multibackend.manager import BackendManager
from multibackend.migrate.phases import load_state, save_state
from multibackend.model import StreamDraft, StreamPatch, StreamQuery

from .conftest import legacy, native_sql


async def _all(backend: Any) -> list[Any]:
    return [s async for s in backend.iter_streams(StreamQuery())]


def _flip_after_plan(app: BackendManager, ops_store: Any) -> list[int]:
    """Make the app's next write planning step be followed by a flip committed elsewhere
    (another process's cutover): the write has its plan, the journal has moved on."""
    planned = app._check_cutover
    flipped: list[int] = []

    async def plan_then_flip() -> int:
        version = await planned()
        if not flipped:
            state = await load_state(ops_store)
            stored = await save_state(
                ops_store,
                attrs.evolve(state, phase="flipped", legacy="legacy", new="new", swapped=True),
            )
            flipped.append(stored.version)
        return version

    app._check_cutover = plan_then_flip  # type: ignore[method-assign]
    return flipped


@pytest.mark.parametrize("outbox", [True, False], ids=["outbox", "intents"])
async def test_a_flip_landing_between_plan_and_transaction_reroutes_the_write(
    tmp_path: Path, outbox: bool
) -> None:
    journal = f"sqlite+aiosqlite:///{tmp_path / ('legacy.db' if outbox else 'journal.db')}"
    app = BackendManager(
        [legacy(tmp_path / "legacy.db"), native_sql(tmp_path / "new.db", "new")],
        primary="legacy",
        journal_url=journal,
    )
    async with app:
        assert app._outbox is outbox
        assert app.store is not None
        before = await app.create_stream(StreamDraft(source="s", link="https://x.test/before"))
        assert await app.drain(timeout=10)
        flipped = _flip_after_plan(app, app.store)

        made = await app.create_stream(StreamDraft(source="s", link="https://x.test/after"))

        assert flipped, "the flip was not injected"
        assert app.cutover.version == flipped[0]
        assert app.primary_name == "new"
        assert app.secondary_names == ["legacy"]
        # The write went to the new primary (its id is the new backend's), and nothing of it
        # was written to the legacy backend by the first, abandoned plan.
        new_side = {s.link: s for s in await _all(app.backends["new"])}
        assert new_side["https://x.test/after"].id == made.id
        assert await app.drain(timeout=10)
        legacy_links = [s.link for s in await _all(app.backends["legacy"])]
        assert legacy_links.count("https://x.test/after") == 1
        # Ids from before the flip still work through id_from.
        updated = await app.update_stream(before.id, StreamPatch(title="t"), id_from="legacy")
        assert updated.title == "t"
