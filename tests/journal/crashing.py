"""Processes that crash on purpose, for the recovery tests (run as ``python crashing.py MODE DIR``).

``worker``: drains the journal into a slow secondary until it is killed.
``write-and-die``: writes streams a1, a2, ... through a manager; the primary's create of the
stream whose source is ``die`` succeeds and then the process SIGKILLs itself, before the manager
can settle the write in the journal. ``write-and-die-direct``: the same, dying inside the
outbox's one-round-trip path (the sql plugin's direct create, on the driver's thread).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from multibackend_sql.direct import SqliteWrites

from multibackend.manager import BackendManager
from multibackend.model import StreamDraft
from multibackend.registry import load_backend


def backends(work: Path) -> list[Any]:
    primary = load_backend(
        "sql",
        name="legacy",
        url=f"sqlite+aiosqlite:///{work}/legacy.db",
        schema="streamsource-legacy",
        create_schema=True,
    )
    secondary = load_backend(
        "sql", name="copy", url=f"sqlite+aiosqlite:///{work}/copy.db", create_schema=True
    )
    return [primary, secondary]


def manager(work: Path, journal: str, **kwargs: Any) -> BackendManager:
    url = f"sqlite+aiosqlite:///{work}/{journal}"
    return BackendManager(backends(work), primary="legacy", journal_url=url, **kwargs)


async def worker(work: Path, journal: str) -> None:
    m = manager(work, journal, worker="external", lease_seconds=1.0)
    async with m:
        target = m.backends["copy"]
        create, update = target.create_stream, target.update_stream

        async def slow_create(draft: Any) -> Any:
            await asyncio.sleep(0.01)
            return await create(draft)

        async def slow_update(id: Any, patch: Any) -> Any:
            await asyncio.sleep(0.01)
            return await update(id, patch)

        target.create_stream = slow_create  # type: ignore[method-assign]
        target.update_stream = slow_update  # type: ignore[method-assign]
        assert m.worker is not None
        m.worker.concurrency = 2
        print("ready", flush=True)
        await m.worker.run()


async def write_and_die(work: Path, journal: str, sources: list[str], *, direct: bool) -> None:
    m = manager(work, journal, worker="external")
    async with m:
        if direct:
            # The outbox's one-round-trip path: the sql plugin's prepared create runs on the
            # driver's thread with the journal statements; die right after the primary's
            # statement, before the journal's and the commit.
            prepare = SqliteWrites.create

            def prepare_then_die(self: SqliteWrites, draft: Any) -> Any:
                run = prepare(self, draft)

                def run_then_die(db: Any) -> Any:
                    stream = run(db)
                    if draft.source == "die":
                        os.kill(os.getpid(), signal.SIGKILL)
                    return stream

                return run_then_die

            SqliteWrites.create = prepare_then_die  # type: ignore[method-assign]
        else:
            # Replacing the method on the instance also keeps the manager off the direct path.
            create = m.primary.create_stream

            async def create_then_die(draft: Any) -> Any:
                stream = await create(draft)
                if draft.source == "die":
                    os.kill(os.getpid(), signal.SIGKILL)
                return stream

            m.primary.create_stream = create_then_die  # type: ignore[method-assign]
        for source in sources:
            await m.create_stream(StreamDraft(source=source, link=f"https://x.com/{source}"))


if __name__ == "__main__":
    mode, work, journal, *rest = sys.argv[1:]
    if mode == "worker":
        asyncio.run(worker(Path(work), journal))
    else:
        direct = mode == "write-and-die-direct"
        asyncio.run(write_and_die(Path(work), journal, rest, direct=direct))
