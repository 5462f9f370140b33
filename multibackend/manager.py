"""BackendManager: write to the primary, fan out to secondaries through the durable journal.

An app calls the manager as it would call one backend. The primary answers; every secondary
receives the same change later, in order per entity, through failures, throttling and crashes.

Write path (DESIGN.md §5):

* **Transactional outbox** — when the primary can share a transaction with the journal (a SQL
  backend whose database is the journal's), the primary write, its fan-out rows and its id-map
  row commit together. Nothing to recover after a crash.
* **Intents** — otherwise an intent is committed before the primary is called and settled (with
  the fan-out rows) after it answers. An intent left behind by a crash is recovered at the next
  start: the primary's state is read back and fanned out, or the intent is dropped when the
  primary never applied the write.
* Journal commits of concurrent writes are shared (group commit).

A write is acknowledged only when its fan-out work is durable. ``on_secondary_failure`` decides
what happens next: ``journal`` (default) leaves it to the sync worker; ``inline`` also applies it
to each secondary right away (lower lag; what fails stays journaled); ``fail`` does the same and
raises :class:`DualWriteFailed` when a secondary fails (after journaling it, so nothing diverges
silently).

Ids returned and accepted by the manager are the primary's. Entities are keyed by an entity key
the manager assigns; the id map links it to each backend's native id.

Migration (issue 7, :mod:`multibackend.migrate`):

* **Cutover.** Every write reads the cutover version inside its own journal transaction (the
  outbox transaction or the intent's, before writing anything; one read per group commit) and,
  when it moved, starts over with the reloaded cutover state: during a flip's write fence
  the write waits (at most until the fence's deadline, then :class:`WriteFenced`); after a flip
  the new backend is primary and the legacy backend a secondary (``new-only`` drops it). So after
  a flip the ids the manager returns and accepts are the **new primary's** — an app that kept
  ids from before passes ``id_from="legacy"`` to the write (translated after the fence, so safe
  on either side of a flip) or converts them with :meth:`BackendManager.translate_id`.
* **Shadow reads.** With ``shadow_backend`` set, a sampled share of reads answered by the primary
  is repeated on that backend in the background and compared (:mod:`multibackend.migrate.shadow`).
* Entity keys for ids written before dual writes began are adopted insert-if-absent, so a
  concurrent backfill and the manager always agree on one key; deletes leave a tombstone so a
  backfill that read the stream just before does not copy it afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Self, TypeVar

import attrs
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from multibackend.backend import Capability, StreamBackend
from multibackend.errors import (
    BackendError,
    ConfigError,
    MultibackendError,
    NotFound,
    Unavailable,
)
from multibackend.journal.apply import apply_row, find_lost_create
from multibackend.journal.direct import (
    Direct,
    DirectWrite,
    DirectWrites,
    direct,
    direct_writes,
    writes_unchanged,
)
from multibackend.journal.engine import async_url, is_memory_sqlite
from multibackend.journal.group import GroupCommitter, ItemFailed, Planned
from multibackend.journal.keys import new_entity_key
from multibackend.journal.retry import BreakerPolicy, RetryPolicy
from multibackend.journal.schema import meta
from multibackend.journal.snapshot import build_snapshot, encode_fields
from multibackend.journal.store import (
    Done,
    FanOut,
    Intent,
    JournalStore,
    Outcome,
    TargetStatus,
    encode_id,
)
from multibackend.journal.worker import EMBEDDED_LINGER, SyncWorker, WorkerStats, draining
from multibackend.journal.writer import HeldWriter
from multibackend.metrics import REGISTRY, CounterSample
from multibackend.migrate.ledger import adopt_keys, record_tombstone
from multibackend.migrate.phases import (
    VERSION_KEY,
    CutoverState,
    WriteFenced,
    load_state,
    read_version,
)
from multibackend.migrate.shadow import ShadowReader
from multibackend.model import (
    Page,
    Stream,
    StreamDraft,
    StreamId,
    StreamPatch,
    StreamQuery,
)

if TYPE_CHECKING:
    from multibackend.config import Config

__all__ = ["BackendManager", "DualWriteFailed", "SyncStatus"]

log = logging.getLogger("multibackend.manager")

ENTITY = "stream"
FailurePolicy = Literal["journal", "inline", "fail"]


_WRITES = "multibackend_writes_total"
P = ParamSpec("P")
R = TypeVar("R")


def _journal_guard(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Report a failure of the journal database as the library's retryable ``Unavailable``
    (a raw SQLAlchemy error — "database is locked" — must not reach the app)."""

    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise Unavailable(
                f"journal database: {(detail[0] if detail else type(exc).__name__)[:200]}"
            ) from exc

    return guarded


@attrs.frozen
class _Written:
    """A primary write to record in the journal (its id mapping and fan-out)."""

    op: Literal["create", "update", "delete"]
    key: str
    native_id: StreamId | None
    result: Stream | None
    given: Mapping[str, Any]


#: A write in the primary's :class:`DirectWrites` form: ``plan(writes, native_id)`` (the
#: native id is None for a create; like ``call``, the write's other arguments are bound).
Plan = Callable[[DirectWrites, Any], DirectWrite]


@attrs.frozen
class _OutboxItem:
    """An outbox write for the group committer: planned at cutover version ``expected``;
    ``plan`` is the same write for a primary offering :class:`DirectWrites`."""

    expected: int
    call: Any
    op: Literal["create", "update", "delete"]
    key: str
    native_id: StreamId | None
    given: Mapping[str, Any]
    plan: Plan | None = None


@attrs.frozen
class _IntentItem:
    """An intent to record, planned at cutover version ``expected``."""

    expected: int
    values: dict[str, Any]


class _CutoverMoved(Exception):
    """Internal: the cutover version moved since the write was planned (nothing written)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"cutover version is now {version}")
        self.version = version


class DualWriteFailed(BackendError):
    """``on_secondary_failure = "fail"``: the primary applied the write but a secondary did not.

    The failed fan-out stays journaled and will be retried; ``result`` is the primary's answer,
    ``failures`` maps each failed secondary to its error text. (``result`` is None for a delete.)
    """

    def __init__(self, result: Stream | None, failures: Mapping[str, str]) -> None:
        detail = "; ".join(f"{name}: {err}" for name, err in failures.items())
        super().__init__(f"written to the primary, but not to every secondary ({detail})")
        self.result = result
        self.failures = dict(failures)


@attrs.frozen(kw_only=True)
class SyncStatus:
    """Fan-out state: per target, what this manager's embedded worker has done, and the
    process's counters (:mod:`multibackend.metrics`: writes by outcome, retries, parked,
    rate-limit waits, shadow reads)."""

    primary: str
    targets: dict[str, TargetStatus]
    worker: WorkerStats | None = None
    counters: tuple[CounterSample, ...] = ()

    @property
    def outstanding(self) -> int:
        return sum(t.outstanding for t in self.targets.values())

    @property
    def parked(self) -> int:
        return sum(t.parked for t in self.targets.values())


class BackendManager:
    """One backend interface over a primary and its secondaries (see the module docstring).

    ``backends`` are unopened or opened backends keyed by name (or a sequence, keyed by their
    ``name``); the manager opens and closes them with itself. ``journal_url`` names the journal
    database (default: a temporary SQLite file removed at close — fine for tests, not durable).
    ``linger`` (seconds, 0 disables): how long the embedded worker lets trickling writes gather
    before claiming them (``[sync] linger``; fan-out lag grows by up to that much; drains never
    wait for it).
    """

    def __init__(
        self,
        backends: Mapping[str, StreamBackend] | Sequence[StreamBackend],
        *,
        primary: str,
        secondaries: Sequence[str] | None = None,
        journal_url: str | None = None,
        on_secondary_failure: FailurePolicy = "journal",
        read_from: str = "primary",
        worker: Literal["embedded", "external"] = "embedded",
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        batch_size: int = 200,
        lease_seconds: float = 60.0,
        linger: float = EMBEDDED_LINGER,
        intent_grace: float = 120.0,
        clock: Any = time.time,
        shadow_backend: str | None = None,
        shadow_sample: float = 0.1,
        shadow_timeout: float = 0.5,
        follow_cutover: bool = True,
    ) -> None:
        self.backends: dict[str, StreamBackend] = (
            dict(backends) if isinstance(backends, Mapping) else {b.name: b for b in backends}
        )
        if primary not in self.backends:
            raise ConfigError(f"{primary!r} is not a configured backend", key="manager.primary")
        self.primary_name = primary
        self.secondary_names = (
            [n for n in self.backends if n != primary] if secondaries is None else list(secondaries)
        )
        for name in self.secondary_names:
            if name not in self.backends or name == primary:
                raise ConfigError(
                    f"{name!r} must be a configured backend other than the primary",
                    key="manager.secondaries",
                )
        if read_from != "primary" and read_from not in self.backends:
            raise ConfigError(f"{read_from!r} is not a configured backend", key="manager.read_from")
        if on_secondary_failure not in ("journal", "inline", "fail"):
            raise ConfigError(
                f"expected journal, inline or fail, got {on_secondary_failure!r}",
                key="manager.on_secondary_failure",
            )
        self.on_secondary_failure = on_secondary_failure
        self.read_from = primary if read_from == "primary" else read_from
        self.worker_mode = worker
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or BreakerPolicy()
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.linger = linger
        self.intent_grace = intent_grace
        self.owner = f"manager-{uuid.uuid4().hex[:12]}"
        # None (or an in-memory SQLite URL, which one shared connection could not serve to the
        # group committer and the worker at once) means a temporary journal file, removed at
        # close: fine for tests and experiments, not durable across runs.
        self._journal_url = journal_url
        self._temp_journal: str | None = None
        self._clock = clock
        self._stack: AsyncExitStack | None = None
        self._outbox = False
        self.store: JournalStore | None = None
        self._group: GroupCommitter | None = None
        self._outbox_group: GroupCommitter | None = None
        self.worker: SyncWorker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        # Roles as configured; the cutover state may swap them at run time.
        self._configured = (self.primary_name, list(self.secondary_names))
        self._configured_read_from = read_from
        self._outbox_backend: str | None = None
        self.follow_cutover = follow_cutover
        self.cutover = CutoverState()
        self._verified: tuple[AsyncConnection, int] | None = None
        # Batched group-commit runs, bound once: the committer batches items of one run object.
        self._run_outbox = self._outbox_many
        self._run_add_intents = self._add_intents_many
        self._run_drop_intents = self._drop_intents_many
        self._run_settle = self._settle_many
        self._version_stmt: Any = None
        # The outbox transaction whose BEGIN the flush's run is left to make (direct path).
        self._unbegun: AsyncConnection | None = None
        self._writes: dict[str, DirectWrites | None] = {}
        self._fast: tuple[AsyncConnection, Direct | None] | None = None
        self._ops: Direct | None = None
        if shadow_backend is not None and shadow_backend not in self.backends:
            raise ConfigError(
                f"{shadow_backend!r} is not a configured backend", key="shadow.backend"
            )
        if not 0.0 <= shadow_sample <= 1.0:
            raise ConfigError(f"must be between 0 and 1, got {shadow_sample}", key="shadow.sample")
        self._shadow_settings = (shadow_backend, shadow_sample, shadow_timeout)
        self.shadow: ShadowReader | None = None

    def __repr__(self) -> str:
        return (
            f"<BackendManager primary={self.primary_name!r} secondaries={self.secondary_names!r}>"
        )

    # --- construction from configuration ------------------------------------------------------

    @classmethod
    def from_config(cls, config: str | Path | Config, **overrides: Any) -> BackendManager:
        """Build a manager from a configuration file or a loaded :class:`Config`.

        ``overrides`` replace constructor arguments taken from the configuration (the CLI
        passes ``worker="external"`` so that a one-off command does not start draining).
        """
        from multibackend.config import Config, build_backends, load_config

        cfg = config if isinstance(config, Config) else load_config(config)
        if cfg.manager is None:
            raise ConfigError("a [manager] section is required", key="manager")
        sync = cfg.sync
        kwargs: dict[str, Any] = {
            "primary": cfg.manager.primary,
            "secondaries": list(cfg.manager.secondaries),
            "journal_url": cfg.journal.url,
            "on_secondary_failure": cfg.manager.on_secondary_failure,
            "read_from": cfg.manager.read_from,
            "worker": cfg.manager.worker,
            "retry": RetryPolicy(
                max_attempts=sync.max_attempts, base=sync.backoff_base, cap=sync.backoff_cap
            ),
            "batch_size": sync.batch_size,
            "linger": sync.linger,
        }
        shadow = cfg.section("shadow")
        if shadow is not None and shadow.backend is not None:
            kwargs.update(
                shadow_backend=shadow.backend,
                shadow_sample=shadow.sample,
                shadow_timeout=shadow.timeout,
            )
        kwargs.update(overrides)
        return cls(build_backends(cfg), **kwargs)

    # --- the StreamBackend face ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The manager answers as its primary (ids, fields and capabilities are the primary's)."""
        return self.primary_name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset(self.primary.capabilities) & {Capability.PIN}

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(self.primary.fields)

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def primary(self) -> StreamBackend:
        return self.backends[self.primary_name]

    @property
    def secondaries(self) -> list[StreamBackend]:
        return [self.backends[n] for n in self.secondary_names]

    async def open(self) -> None:
        """Open every backend and the journal, recover unsettled intents, start the worker."""
        if self._stack is not None:
            return
        stack = AsyncExitStack()
        try:
            for backend in self.backends.values():
                await backend.open()
                stack.push_async_callback(backend.close)
            shared = self._shared_engine()
            self._outbox = shared is not None
            if shared is None and (
                self._journal_url is None or is_memory_sqlite(async_url(self._journal_url))
            ):
                self._temp_journal = tempfile.mkdtemp(prefix="multibackend-journal-")
                stack.callback(shutil.rmtree, self._temp_journal, ignore_errors=True)
            self.store = (
                JournalStore(engine=shared, clock=self._clock)
                if shared is not None
                else JournalStore(self.journal_url, clock=self._clock)
            )
            await self.store.open()
            stack.push_async_callback(self.store.close)
            self._outbox_backend = self.primary_name if shared is not None else None
            shadow_name, sample, timeout = self._shadow_settings
            if shadow_name is not None:
                self.shadow = ShadowReader(
                    self.store, self.backends[shadow_name], sample=sample, timeout=timeout
                )
                stack.push_async_callback(self.shadow.close)
            # Intents and settles: on a SQLite journal a flush is one call on a held
            # connection's thread (see multibackend.journal.writer); where it cannot be had
            # (PostgreSQL, an in-memory database) the writer says so and the committer uses
            # SQLAlchemy.
            self._group = GroupCommitter(self.store, writer=HeldWriter(self.store.engine))
            stack.push_async_callback(self._group.close)
            if shared is not None:
                # Whole outbox writes (the primary's statement and its journal rows) share
                # commits too: one unit per write, in the primary's own transaction.
                self._outbox_group = GroupCommitter(self.store, begin=self._outbox_begin())
                stack.push_async_callback(self._outbox_group.close)
            self.worker = SyncWorker(
                self.store,
                self.backends,
                targets=self.secondary_names,
                policy=self.retry,
                breaker=self.breaker,
                batch_size=self.batch_size,
                lease_seconds=self.lease_seconds,
                linger=self.linger,
                owner=f"{self.owner}-worker",
            )
            if self.follow_cutover:
                await self._apply_cutover(await load_state(self.store))
            await self.recover_intents()
            if self.worker_mode == "embedded" and self.secondary_names:
                self._worker_task = asyncio.create_task(self.worker.run())
                stack.push_async_callback(self._stop_worker)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        log.info(
            "manager open: primary %s, secondaries %s, %s",
            self.primary_name,
            ", ".join(self.secondary_names) or "none",
            "transactional outbox" if self._outbox else "intents",
        )

    async def close(self) -> None:
        """Stop the embedded worker after its batch, commit queued journal work, close all."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self._worker_task is not None:
            try:
                await asyncio.wait_for(self._worker_task, timeout=30)
            except TimeoutError:
                self._worker_task.cancel()
            self._worker_task = None

    @property
    def journal_url(self) -> str:
        """The journal database's URL (a temporary file's when none was configured)."""
        if self._temp_journal is not None:
            return f"sqlite+aiosqlite:///{self._temp_journal}/journal.db"
        if self._journal_url is None:
            raise MultibackendError("the manager is not open: its temporary journal has no URL")
        return self._journal_url

    def _shared_engine(self) -> AsyncEngine | None:
        """The primary's engine when the journal lives in the primary's database."""
        primary = self.primary
        if Capability.TRANSACTIONS not in primary.capabilities:
            return None
        engine = getattr(primary, "engine", None)
        if not isinstance(engine, AsyncEngine):
            return None
        if self._journal_url is None:
            return None
        if _same_database(engine.url.render_as_string(hide_password=False), self._journal_url):
            return engine
        return None

    def _outbox_begin(self) -> Callable[[], AbstractAsyncContextManager[AsyncConnection]]:
        """How an outbox group commit begins: the primary's ``transaction()``.

        On SQLite, when the primary lets the caller begin (the sql plugin's
        ``sqlite_begin=False``) and the direct path is available, the transaction's
        ``BEGIN IMMEDIATE`` and the cutover version read run in one round trip to aiosqlite's
        thread, first thing in the block: the same statements in the same order as
        ``transaction()`` followed by :meth:`_verify_cutover`, one round trip fewer.
        """
        transaction = self.primary.transaction  # type: ignore[attr-defined]
        try:
            lets_caller_begin = "sqlite_begin" in inspect.signature(transaction).parameters
        except (TypeError, ValueError):  # pragma: no cover - not introspectable
            lets_caller_begin = False
        if not lets_caller_begin or self.store is None or self.store.dialect != "sqlite":
            return transaction  # type: ignore[no-any-return]

        @asynccontextmanager
        async def begin() -> AsyncIterator[AsyncConnection]:
            async with transaction(sqlite_begin=False) as conn:
                fast = await self._direct(conn)
                if fast is None:
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                elif self._primary_writes() is not None:
                    # The flush's run begins, in the round trip that also writes (see
                    # _outbox_direct), or first thing when it takes the other path.
                    self._unbegun = conn
                else:
                    await self._begin_now(conn, fast)
                try:
                    yield conn
                finally:
                    if self._unbegun is conn:
                        self._unbegun = None

        return begin

    async def _begin_now(self, conn: AsyncConnection, fast: Direct) -> None:
        """``BEGIN IMMEDIATE`` and (following the cutover) the version read, in one round trip."""
        if self.follow_cutover:
            text = await fast.run(lambda db: fast.begin_and_read_version(db, VERSION_KEY))
            # Read in this transaction, before anything is written: what _verify_cutover
            # would read (it uses this instead of reading again).
            self._verified = (conn, int(text) if text else 0)
        else:
            await fast.run(fast.begin)

    def _primary_writes(self) -> DirectWrites | None:
        """The primary's :class:`DirectWrites` when outbox flushes can use them: the primary
        shares the journal's SQLite database and offers them (the ``sql`` plugin does)."""
        name = self.primary_name
        if name != self._outbox_backend or self.store is None or self.store.dialect != "sqlite":
            return None
        if name not in self._writes:
            self._writes[name] = direct_writes(self.primary)
        writes = self._writes[name]
        # Checked again at every flush: a method replaced later must still see its writes.
        return writes if writes is not None and writes_unchanged(self.primary) else None

    def _ready(self) -> tuple[JournalStore, GroupCommitter]:
        if self.store is None or self._group is None:
            raise MultibackendError("the manager is not open: use 'async with manager:'")
        return self.store, self._group

    # --- the cutover ------------------------------------------------------------------------

    async def _apply_cutover(self, state: CutoverState) -> None:
        """Take the roles the cutover state gives (a swap after a flip, legacy dropped in
        new-only)."""
        self.cutover = state
        primary, secondaries = state.roles(*self._configured)
        if (primary, secondaries) != (self.primary_name, self.secondary_names):
            log.warning(
                "cutover phase %s: primary %s, secondaries %s",
                state.phase,
                primary,
                ", ".join(secondaries) or "none",
            )
        self.primary_name = primary
        self.secondary_names = secondaries
        if self._configured_read_from == "primary":
            self.read_from = primary
        self._outbox = self._outbox_backend is not None and self._outbox_backend == primary
        if self.worker is not None:
            # Every backend but the primary: rows queued for a backend before it became primary
            # (none after a drained flip) or after it stopped being a secondary still drain.
            self.worker.targets = [n for n in self.backends if n != primary]

    async def _check_cutover(self) -> int:
        """Before a write: wait while the cutover state this manager knows has a write fence
        standing (following any change meanwhile). Returns the cutover version the write is
        planned with; :meth:`_verify_cutover` checks it again inside the write's transaction.

        No database read when no fence is known: the authoritative check is the one inside the
        transaction, which a concurrent fence or flip cannot pass (see :meth:`_verify_cutover`).
        """
        store, _ = self._ready()
        if not self.follow_cutover or not self.cutover.fenced(store.clock()):
            return self.cutover.version
        while self.cutover.fenced(store.clock()):
            until = self.cutover.fence_until or 0.0
            await asyncio.sleep(0.02)
            if await read_version(store) != self.cutover.version:
                await self._apply_cutover(await load_state(store))
                continue
            if store.clock() >= until:
                raise WriteFenced(
                    f"writes are fenced ({self.cutover.fence_reason or 'cutover'}) and the "
                    "fence was not lifted in time; nothing was written — retry the write",
                    backend=self.primary_name,
                )
        return self.cutover.version

    async def _verify_cutover(self, conn: AsyncConnection, expected: int) -> None:
        """Inside a write's journal transaction, before anything is written: raise
        :class:`_CutoverMoved` when the cutover version is not ``expected`` (the one the write
        was planned with), so that the write reloads the state and starts over.

        Why this is exact: the version is read in the transaction that also commits the write's
        journal rows (the outbox transaction, or the intent's). On SQLite that transaction holds
        the database's write lock, on PostgreSQL the read locks the version row (``FOR SHARE``),
        so a cutover change (fence, flip, rollback) commits either before the read — the write
        sees it — or after the write's commit, when its rows (or intent) are in the journal for
        the flip's drain to wait for. Read once per transaction (group commits share it).
        """
        if not self.follow_cutover:
            return
        memo = self._verified
        if memo is not None and memo[0] is conn:
            version = memo[1]
        else:
            store, _ = self._ready()
            fast = await self._direct(conn)
            if fast is not None:
                text = await fast.run(lambda db: fast.read_version(db, VERSION_KEY))
            else:
                if self._version_stmt is None:
                    stmt = select(meta.c.value).where(meta.c.key == VERSION_KEY)
                    if store.dialect == "postgresql":
                        stmt = stmt.with_for_update(read=True)
                    self._version_stmt = stmt
                text = (await conn.execute(self._version_stmt)).scalar()
            version = int(text) if text else 0
            # Holding the connection keeps its identity from being reused by another one.
            self._verified = (conn, version)
        if version != expected:
            raise _CutoverMoved(version)

    # --- writes -------------------------------------------------------------------------------

    async def create_stream(self, draft: StreamDraft) -> Stream:
        """Create on the primary; fan out to every secondary. Returns the primary's stream."""
        key = new_entity_key()
        stream: Stream = await self._counted_write(
            "create",
            key,
            None,
            draft.given(),
            lambda _: self.primary.create_stream(draft),
            plan=lambda writes, _: writes.create(draft),
        )
        return stream

    async def update_stream(
        self, id: StreamId, patch: StreamPatch, *, id_from: str | None = None
    ) -> Stream:
        """Update on the primary (NotFound if missing); fan out the new state.

        ``id`` is the primary's id, or with ``id_from`` the id in that backend (translated to
        the primary's when the write runs, after any cutover fence: safe across a flip).
        """
        stream: Stream = await self._counted_write(
            "update",
            None,
            id,
            patch.given(),
            lambda nid: self.primary.update_stream(nid, patch),
            id_from=id_from,
            plan=lambda writes, nid: writes.update(nid, patch),
        )
        return stream

    async def set_pinned(self, id: StreamId, pinned: bool, *, id_from: str | None = None) -> Stream:
        """Pin or unpin on the primary; fan out the new state (``id_from`` as for updates)."""
        stream: Stream = await self._counted_write(
            "update",
            None,
            id,
            {"is_pinned": pinned},
            lambda nid: self.primary.set_pinned(nid, pinned),
            id_from=id_from,
            plan=lambda writes, nid: writes.set_pinned(nid, pinned),
        )
        return stream

    async def delete_stream(self, id: StreamId, *, id_from: str | None = None) -> None:
        """Delete on the primary (NotFound if missing); fan out the delete (``id_from`` as for
        updates)."""

        async def call(nid: StreamId) -> None:
            await self.primary.delete_stream(nid)

        await self._counted_write(
            "delete",
            None,
            id,
            {},
            call,
            id_from=id_from,
            plan=lambda writes, nid: writes.delete(nid),
        )

    async def _counted_write(
        self,
        op: Literal["create", "update", "delete"],
        key: str | None,
        native_id: StreamId | None,
        given: Mapping[str, Any],
        call: Any,
        *,
        id_from: str | None = None,
        plan: Plan | None = None,
    ) -> Any:
        """:meth:`_write`, counted in ``multibackend_writes_total`` by primary, op and outcome."""
        primary = self.primary_name
        try:
            result = await self._write(op, key, native_id, given, call, id_from=id_from, plan=plan)
        except Exception as exc:
            REGISTRY.inc(_WRITES, backend=primary, op=op, outcome=type(exc).__name__)
            raise
        REGISTRY.inc(_WRITES, backend=primary, op=op, outcome="ok")
        return result

    @_journal_guard
    async def _write(
        self,
        op: Literal["create", "update", "delete"],
        key: str | None,
        native_id: StreamId | None,
        given: Mapping[str, Any],
        call: Any,
        *,
        id_from: str | None = None,
        plan: Plan | None = None,
    ) -> Any:
        while True:
            expected = await self._check_cutover()
            try:
                return await self._write_once(
                    op, key, native_id, given, call, id_from=id_from, expected=expected, plan=plan
                )
            except _CutoverMoved:
                # The cutover changed after this write was planned: nothing was written;
                # take the new roles (and wait out a fence) and plan it again.
                store, _ = self._ready()
                await self._apply_cutover(await load_state(store))

    async def _write_once(
        self,
        op: Literal["create", "update", "delete"],
        key: str | None,
        native_id: StreamId | None,
        given: Mapping[str, Any],
        call: Any,
        *,
        id_from: str | None,
        expected: int,
        plan: Plan | None = None,
    ) -> Any:
        store, group = self._ready()
        if native_id is not None and id_from is not None and id_from != self.primary_name:
            asked = native_id
            native_id = await self.translate_id(asked, id_from, self.primary_name)
            if native_id is None:
                raise NotFound(
                    f"stream {asked!r} of {id_from!r} has no copy on the primary",
                    backend=self.primary_name,
                    id=asked,
                )
        if key is None:
            assert native_id is not None
            found = await store.entity_key_of(ENTITY, self.primary_name, native_id)
            if found is not None:
                key = found
            else:
                # Written before dual writes began and not yet backfilled: adopt it now, so
                # this write brings the entity's whole state to the secondaries. Insert-if-
                # absent: a backfill adopting the same id concurrently gets the same key.
                primary_name = self.primary_name
                adopted = await group.submit(
                    lambda conn: adopt_keys(store, conn, ENTITY, primary_name, [native_id])
                )
                key = adopted[str(native_id)]
        assert key is not None
        entity_key: str = key
        if self._outbox:
            assert self._outbox_group is not None
            # One item of group commit: the cutover check, the primary's statement and the
            # journal rows run in a transaction shared with concurrent writes, and this write
            # is answered once that transaction committed (see GroupCommitter).
            result, entity_key = await self._outbox_group.submit_batched(
                self._run_outbox,
                _OutboxItem(expected, call, op, entity_key, native_id, given, plan),
            )
        else:
            intent = _IntentItem(
                expected,
                {
                    "entity_type": ENTITY,
                    "entity_key": entity_key,
                    "op": op,
                    "backend": self.primary_name,
                    "native_id": native_id,
                    "payload": encode_fields(given),
                    "owner": self.owner,
                },
            )
            # Once the intent is committed, a flip's drain waits for it to be settled, so the
            # roles cannot change under this write.
            intent_id: int = await group.submit_batched(
                self._run_add_intents, intent, plan=self._plan_add_intents
            )
            try:
                result = await call(native_id)
            except MultibackendError as exc:
                if not exc.retryable:
                    # The primary refused: nothing happened, nothing to recover.
                    await group.submit_batched(
                        self._run_drop_intents, intent_id, plan=self._plan_drop_intents
                    )
                raise
            entity_key = await group.submit_batched(
                self._run_settle,
                (intent_id, _Written(op, entity_key, native_id, result, given)),
                plan=self._plan_settle,
            )
        if self.worker is not None and self.worker_mode == "embedded":
            self.worker.wake()
        if self.on_secondary_failure != "journal" and self.secondary_names:
            await self._apply_inline(entity_key, result)
        return result

    async def _outbox_many(
        self, conn: AsyncConnection, items: list[_OutboxItem]
    ) -> list[tuple[Any, str] | BaseException]:
        """Batched outbox writes in one primary transaction: each item's cutover check and
        primary call, then the journal rows of all of them together."""
        writes = self._primary_writes()
        if writes is not None and all(item.plan is not None for item in items):
            fast = await self._direct(conn)
            if fast is not None:
                return await self._outbox_direct(conn, fast, writes, items)
        if self._unbegun is conn:
            self._unbegun = None
            fast = await self._direct(conn)
            assert fast is not None  # deferred only when the direct path was there
            await self._begin_now(conn, fast)
        answers: list[tuple[Any, str] | BaseException] = []
        written: list[_Written] = []
        for index, item in enumerate(items):
            try:
                await self._verify_cutover(conn, item.expected)
            except _CutoverMoved as moved:
                answers.append(moved)  # nothing written for it: only its caller starts over
                continue
            try:
                done = await item.call(item.native_id)
            except Exception as exc:
                raise ItemFailed(index) from exc
            written.append(_Written(item.op, item.key, item.native_id, done, item.given))
            answers.append((done, ""))
        keys = iter(await self._record_many(conn, written))
        return [a if isinstance(a, BaseException) else (a[0], next(keys)) for a in answers]

    async def _outbox_direct(
        self,
        conn: AsyncConnection,
        fast: Direct,
        writes: DirectWrites,
        items: list[_OutboxItem],
    ) -> list[tuple[Any, str] | BaseException]:
        """:meth:`_outbox_many` in one round trip to aiosqlite's thread (SQLite, a primary
        offering :class:`DirectWrites`): ``BEGIN IMMEDIATE`` and the cutover version read
        (unless the transaction already made them), then per item, in order, its version
        check and its primary statement, then the journal rows of the writes made (id
        mappings, fan-out upsert). The same statements in the same order as the other path.

        What each item gets is what the other path gives it: an item planned at another
        cutover version writes nothing and starts over (:class:`_CutoverMoved`); an item whose
        preparation raised, or whose statement matched no row (NotFound), wrote nothing and
        gets that error while the others commit; any other failure of an item's statement is
        :class:`ItemFailed` (the group commit rolls back and isolates it). When every journal
        row was written there, the round trip ends with the commit (the primary's
        ``transaction(sqlite_begin=False)`` then has nothing left to commit). Deletes'
        journal rows (unmapping, tombstone) are written after the round trip by
        :meth:`_record_many`, and the block's exit commits.
        """
        store, _ = self._ready()
        begin = self._unbegun is conn
        self._unbegun = None
        plans: list[DirectWrite | BaseException] = []
        for item in items:
            assert item.plan is not None
            try:
                plans.append(item.plan(writes, item.native_id))
            except Exception as exc:  # nothing prepared, nothing will be written for it
                plans.append(exc)
        memo = self._verified
        known = memo[1] if memo is not None and memo[0] is conn else None
        follow = self.follow_cutover
        # Taken now, on the event loop: the function below runs on the driver's thread.
        roles = _Roles.of(self)
        now = store.clock()

        def work(
            db: Any,
        ) -> tuple[int | None, list[Any], list[_Written], list[str] | None]:
            if begin:
                fast.begin(db)
            version = known
            if follow and version is None:
                text = fast.read_version(db, VERSION_KEY)
                version = int(text) if text else 0
            answers: list[Any] = []
            written: list[_Written] = []
            for index, (item, plan) in enumerate(zip(items, plans, strict=True)):
                if version is not None and item.expected != version:
                    answers.append(_CutoverMoved(version))
                    continue
                if isinstance(plan, BaseException):
                    answers.append(plan)
                    continue
                try:
                    result = plan(db)
                except NotFound as exc:  # no row matched: the statement changed nothing
                    answers.append(exc)
                    continue
                except Exception as exc:
                    # The group commit rolls back and isolates the item (as _outbox_many).
                    raise ItemFailed(index) from exc
                written.append(_Written(item.op, item.key, item.native_id, result, item.given))
                answers.append(result)
            if not _direct_writes(written):
                return version, answers, written, None
            creates, mappings, fanouts, keys = roles.journal_rows(written, now)
            keys = fast.record(db, mappings, fanouts, keys, creates)
            # The transaction's last act (the outbox group runs nothing else in it): its
            # commit, here rather than in one more round trip when the block exits. Callers
            # are answered after the block exits, so only once this commit is done.
            db.commit()
            return version, answers, written, keys

        version, answers, written, keys = await fast.run(work)
        if version is not None:
            self._verified = (conn, version)
        if keys is None:
            keys = await self._record_many(conn, written)
        order = iter(keys)
        return [a if isinstance(a, BaseException) else (a, next(order)) for a in answers]

    async def _add_intents_many(
        self, conn: AsyncConnection, items: list[_IntentItem]
    ) -> list[int | BaseException]:
        """Batched intents: one cutover check per transaction, one insert for all."""
        store, _ = self._ready()
        fast = await self._direct(conn)
        if fast is not None and self.follow_cutover:
            return await self._add_intents_direct(fast, items)
        answers: list[int | BaseException] = []
        fresh: list[int] = []
        for index, item in enumerate(items):
            try:
                await self._verify_cutover(conn, item.expected)
            except _CutoverMoved as moved:
                answers.append(moved)
                continue
            fresh.append(index)
            answers.append(0)
        ids = await store.add_intents(conn, [items[i].values for i in fresh])
        for index, intent_id in zip(fresh, ids, strict=True):
            answers[index] = intent_id
        return answers

    async def _add_intents_direct(
        self, fast: Direct, items: list[_IntentItem]
    ) -> list[int | BaseException]:
        """:meth:`_add_intents_many` on SQLite in one round trip: the cutover version read
        (see :meth:`_verify_cutover`) and the insert of the intents planned at that version."""
        work, answer = self._plan_add_intents(items)
        return answer(await fast.run(work))

    def _plan_add_intents(self, items: list[_IntentItem]) -> Planned:
        """:meth:`_add_intents_many` as work on the raw SQLite connection, inside the write
        transaction (:mod:`multibackend.journal.group`): the cutover version read, when
        following the cutover, and the insert of the intents planned at that version."""
        store, _ = self._ready()
        ops = self._sql_ops()
        follow = self.follow_cutover
        ids, rows = store.intent_rows([item.values for item in items], store.clock())

        def work(db: Any) -> int | None:
            if not follow:
                ops.insert_intents(db, rows)
                return None
            text = ops.read_version(db, VERSION_KEY)
            version = int(text) if text else 0
            ops.insert_intents(
                db, [r for r, i in zip(rows, items, strict=True) if i.expected == version]
            )
            return version

        def answer(version: int | None) -> list[Any]:
            return [
                intent_id if version is None or item.expected == version else _CutoverMoved(version)
                for intent_id, item in zip(ids, items, strict=True)
            ]

        return work, answer

    def _plan_drop_intents(self, ids: list[int]) -> Planned:
        """:meth:`_drop_intents_many` as work on the raw SQLite connection."""
        ops = self._sql_ops()
        return (lambda db: ops.delete_intents(db, ids)), (lambda _: [None] * len(ids))

    def _plan_settle(self, items: list[tuple[int, _Written]]) -> Planned | None:
        """:meth:`_settle_many` as work on the raw SQLite connection: creates and updates
        (what :meth:`_record_direct` records); None for others (the SQLAlchemy path)."""
        writes = [w for _, w in items]
        if not _direct_writes(writes):
            return None
        work = self._record_work(self._sql_ops(), writes, [intent_id for intent_id, _ in items])
        return work, lambda keys: keys

    def _sql_ops(self) -> Direct:
        """The journal's statements on a raw SQLite connection (no driver of their own)."""
        if self._ops is None:
            store, _ = self._ready()
            self._ops = Direct(None, store.direct_sql())
        return self._ops

    async def _drop_intents_many(self, conn: AsyncConnection, ids: list[int]) -> list[None]:
        store, _ = self._ready()
        await store.remove_intents(conn, ids)
        return [None] * len(ids)

    async def _settle_many(
        self, conn: AsyncConnection, items: list[tuple[int, _Written]]
    ) -> list[str]:
        """Batched settles: remove the intents, record the writes (id map, fan-out)."""
        return await self._record_many(
            conn, [w for _, w in items], remove=[intent_id for intent_id, _ in items]
        )

    async def _record(
        self,
        conn: AsyncConnection,
        op: Literal["create", "update", "delete"],
        key: str,
        native_id: StreamId | None,
        result: Stream | None,
        given: Mapping[str, Any],
    ) -> str:
        """Record a primary write's id mapping and fan-out in ``conn``; returns the entity key
        used (a concurrent backfill may have adopted a new stream's id first: its key wins)."""
        keys = await self._record_many(conn, [_Written(op, key, native_id, result, given)])
        return keys[0]

    async def _record_many(
        self, conn: AsyncConnection, writes: Sequence[_Written], remove: Sequence[int] = ()
    ) -> list[str]:
        """:meth:`_record` for several writes: the new ids mapped with one insert, the fan-out
        rows of all of them upserted with one statement (in order, so two writes of one entity
        merge as they were made). ``remove``: intents to delete first (a settle).

        On SQLite (aiosqlite) creates and updates are recorded in one round trip to the
        driver's thread (:mod:`multibackend.journal.direct`); deletes take the statements below.
        """
        store, _ = self._ready()
        if _direct_writes(writes):
            fast = await self._direct(conn)
            if fast is not None:
                return await self._record_direct(fast, writes, remove)
        if remove:
            await store.remove_intents(conn, remove)
        keys = [w.key for w in writes]
        creates = [i for i, w in enumerate(writes) if w.op == "create"]
        if creates:
            pairs = []
            for i in creates:
                assert writes[i].result is not None
                pairs.append((writes[i].key, writes[i].result.id))  # type: ignore[union-attr]
            owners = await store.map_new_ids(conn, ENTITY, self.primary_name, pairs)
            for i, owner in zip(creates, owners, strict=True):
                keys[i] = owner
        fanouts: list[FanOut] = []
        for w, key in zip(writes, keys, strict=True):
            if w.op == "delete":
                assert w.native_id is not None
                await store.unmap_id(conn, ENTITY, key, self.primary_name)
                await record_tombstone(store, conn, ENTITY, self.primary_name, w.native_id)
                fanouts.extend(
                    FanOut(entity_type=ENTITY, entity_key=key, target=name, op="delete")
                    for name in self.secondary_names
                )
                continue
            result = w.result
            assert result is not None
            if w.op == "update" and w.native_id != result.id:  # pragma: no cover - re-keyed
                await store.map_id(conn, ENTITY, key, self.primary_name, result.id)
            # An update's mapping exists already: it was found, or made when adopting the id.
            fanouts.extend(
                FanOut(
                    entity_type=ENTITY,
                    entity_key=key,
                    target=target.name,
                    op=w.op,
                    snapshot=build_snapshot(
                        result,
                        primary_fields=self.primary.fields,
                        target_fields=target.fields,
                        given=w.given,
                    ),
                )
                for target in self.secondaries
            )
        await store.enqueue(conn, fanouts)
        return keys

    async def _record_direct(
        self, fast: Direct, writes: Sequence[_Written], remove: Sequence[int]
    ) -> list[str]:
        """:meth:`_record_many` for creates and updates in one round trip (SQLite)."""
        return await fast.run(self._record_work(fast, writes, remove))

    def _record_work(
        self, fast: Direct, writes: Sequence[_Written], remove: Sequence[int]
    ) -> Callable[[Any], list[str]]:
        """:meth:`_record_direct`'s work on the raw connection (rows built here, on the loop)."""
        store, _ = self._ready()
        creates, mappings, fanouts, keys = _Roles.of(self).journal_rows(writes, store.clock())

        def work(db: Any) -> list[str]:
            fast.delete_intents(db, remove)
            return fast.record(db, mappings, fanouts, keys, creates)

        return work

    async def _direct(self, conn: AsyncConnection) -> Direct | None:
        """The one-round-trip path for ``conn`` (SQLite through aiosqlite), else None."""
        store, _ = self._ready()
        if store.dialect != "sqlite":
            return None
        memo = self._fast
        if memo is not None and memo[0] is conn:
            return memo[1]  # asked again in the same transaction (an outbox flush asks twice)
        fast = await direct(conn, store.direct_sql)
        # Holding the connection keeps its identity from being reused by another one.
        self._fast = (conn, fast)
        return fast

    async def _apply_inline(self, key: str, result: Stream | None) -> None:
        """Apply this entity's fresh rows to every secondary now (inline and fail policies)."""
        store, _ = self._ready()
        rows = await store.claim_entity(
            self.owner, ENTITY, key, targets_=self.secondary_names, lease_seconds=60.0
        )
        if not rows:
            return
        native = {row.target: await store.native_id_of(ENTITY, key, row.target) for row in rows}
        outcomes: list[Outcome] = list(
            await asyncio.gather(
                *(
                    apply_row(
                        row,
                        self.backends[row.target],
                        native[row.target],
                        store,
                        self.retry,
                        now=store.clock(),
                    )
                    for row in rows
                )
            )
        )
        await store.settle(self.owner, outcomes)
        failures = {
            o.row.target: getattr(o, "error", "") for o in outcomes if not isinstance(o, Done)
        }
        if failures and self.on_secondary_failure == "fail":
            raise DualWriteFailed(result, failures)

    # --- reads --------------------------------------------------------------------------------

    @property
    def reader(self) -> StreamBackend:
        return self.backends[self.read_from]

    @_journal_guard
    async def get_stream(self, id: StreamId, *, id_from: str | None = None) -> Stream:
        """Read one stream from the ``read_from`` backend; ``id`` is the primary's id (or, with
        ``id_from``, that backend's; the answer then carries the primary's id)."""
        if id_from is not None and id_from != self.primary_name:
            primary_id = await self.translate_id(id, id_from, self.primary_name)
            if primary_id is None:
                raise NotFound(
                    f"stream {id!r} of {id_from!r} has no copy on the primary",
                    backend=self.primary_name,
                    id=id,
                )
            id = primary_id
        if self.read_from == self.primary_name:
            stream = await self.primary.get_stream(id)
            if self.shadow is not None:
                self.shadow.after_get(self.primary, stream)
            return stream
        other = await self.translate_id(id, self.primary_name, self.read_from)
        if other is None:
            raise NotFound(f"stream {id!r} has no copy here yet", backend=self.read_from, id=id)
        stream = await self.reader.get_stream(other)
        return attrs.evolve(stream, id=id)

    @_journal_guard
    async def list_streams(self, query: StreamQuery) -> Page[Stream]:
        """One page from the ``read_from`` backend, with ids in the primary's id space."""
        page = await self.reader.list_streams(query)
        if self.read_from == self.primary_name:
            if self.shadow is not None:
                self.shadow.after_list(self.primary, query, page)
            return page
        return attrs.evolve(page, items=tuple(await self._to_primary_ids(page.items)))

    async def iter_streams(self, query: StreamQuery | None = None) -> AsyncIterator[Stream]:
        """Every matching stream from the ``read_from`` backend (primary ids)."""
        if self.read_from == self.primary_name:
            async for stream in self.primary.iter_streams(query):
                yield stream
            return
        chunk: list[Stream] = []
        async for stream in self.reader.iter_streams(query):
            chunk.append(stream)
            if len(chunk) >= 200:
                for s in await self._to_primary_ids(chunk):
                    yield s
                chunk = []
        for s in await self._to_primary_ids(chunk):
            yield s

    async def _to_primary_ids(self, streams: Sequence[Stream]) -> list[Stream]:
        store, _ = self._ready()
        ids = await store.translate_ids(
            ENTITY, self.read_from, [s.id for s in streams], self.primary_name
        )
        out = []
        for s in streams:
            primary_id = ids.get(str(s.id))
            if primary_id is not None:
                out.append(attrs.evolve(s, id=primary_id))
        return out

    @_journal_guard
    async def translate_id(
        self, id: StreamId, from_backend: str, to_backend: str
    ) -> StreamId | None:
        """The id in ``to_backend`` of the entity that is ``id`` in ``from_backend`` (None when
        that backend has no copy yet)."""
        store, _ = self._ready()
        for name in (from_backend, to_backend):
            if name not in self.backends:
                raise ConfigError(f"{name!r} is not a configured backend")
        if from_backend == to_backend:
            return id
        found = await store.translate_ids(ENTITY, from_backend, [id], to_backend)
        return found.get(str(id))

    # --- sync control ------------------------------------------------------------------------

    @_journal_guard
    async def sync_status(self) -> SyncStatus:
        """Pending, in-flight and parked work per secondary, pauses, and worker counters."""
        store, _ = self._ready()
        return SyncStatus(
            primary=self.primary_name,
            targets=await store.status(self.secondary_names),
            worker=self.worker.stats if self.worker is not None else None,
            counters=tuple(REGISTRY.samples()),
        )

    @_journal_guard
    async def drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until no fan-out work is pending or in flight (parked rows excepted) or
        ``timeout`` seconds pass. Returns True when drained.

        With an embedded worker it is nudged, and no worker of the process lingers meanwhile
        (see ``[sync] linger``); with ``worker = "external"`` this only waits.
        """
        store, _ = self._ready()
        deadline = None if timeout is None else time.monotonic() + timeout
        with draining():
            while True:
                if await store.outstanding(self.secondary_names) == 0:
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                if self.worker is not None and self.worker_mode == "embedded":
                    self.worker.wake()
                await asyncio.sleep(0.02)

    # --- crash recovery -------------------------------------------------------------------------

    async def recover_intents(self, *, older_than: float | None = None) -> int:
        """Settle intents left by writes that never finished (a crash between the primary call
        and the journal commit). Returns how many were recovered.

        Only intents older than ``intent_grace`` seconds are touched, so writes in flight in
        other processes are left alone.
        """
        store, group = self._ready()
        cutoff = store.clock() - (self.intent_grace if older_than is None else older_than)
        stale = await store.stale_intents(cutoff)
        for intent in stale:
            await self._recover(intent, store, group)
        if stale:
            log.warning("recovered %d unsettled write(s) from a previous run", len(stale))
        return len(stale)

    async def _recover(self, intent: Intent, store: JournalStore, group: GroupCommitter) -> None:
        from multibackend.journal.snapshot import decode_snapshot

        given = decode_snapshot(intent.payload or {})
        # The backend the intent was written to (the primary then; a cutover may have swapped).
        written_to = self.backends.get(intent.backend, self.primary)
        stream: Stream | None = None
        op: Literal["create", "update", "delete"] = "update"
        if intent.op == "create":
            probe = _probe_row(intent, given)
            stream = await find_lost_create(written_to, probe.snapshot or {}, store, probe)
            op = "create"
        elif intent.native_id is not None:
            try:
                stream = await written_to.get_stream(intent.native_id)
            except NotFound:
                op = "delete"

        async def settle(conn: AsyncConnection) -> None:
            await store.remove_intents(conn, [intent.id])
            if stream is not None:
                await self._record(conn, op, intent.entity_key, stream.id, stream, given)
            elif op == "delete" and intent.native_id is not None:
                await self._record(conn, "delete", intent.entity_key, intent.native_id, None, {})

        await group.submit(settle)


def _direct_record(w: _Written) -> bool:
    """Whether :meth:`Direct.record` can record ``w``: a create, or an update that kept its id
    (deletes unmap the id and leave a tombstone: the SQLAlchemy path)."""
    return w.op == "create" or (
        w.op == "update" and w.result is not None and w.native_id == w.result.id
    )


@attrs.frozen
class _Roles:
    """The primary and the secondaries whose journal rows a flush writes, taken on the event
    loop (the rows may be built on the driver's thread)."""

    primary: str
    primary_fields: frozenset[str]
    targets: tuple[tuple[str, frozenset[str]], ...]

    @classmethod
    def of(cls, manager: BackendManager) -> _Roles:
        return cls(
            manager.primary_name,
            frozenset(manager.primary.fields),
            tuple((t.name, frozenset(t.fields)) for t in manager.secondaries),
        )

    def journal_rows(
        self, writes: Sequence[_Written], now: float
    ) -> tuple[list[int], list[dict[str, Any]], list[tuple[int, dict[str, Any]]], list[str]]:
        """The parameters of :meth:`Direct.record` for creates and updates (see
        :func:`_direct_record`): which writes are creates, their new ids' mappings, the
        fan-out rows (with the index of their write) and the writes' entity keys."""
        creates: list[int] = []
        mappings: list[dict[str, Any]] = []
        fanouts: list[tuple[int, dict[str, Any]]] = []
        for index, w in enumerate(writes):
            result = w.result
            assert result is not None
            if w.op == "create":
                text, is_int = encode_id(result.id)
                creates.append(index)
                mappings.append(
                    {
                        "entity_type": ENTITY,
                        "entity_key": w.key,
                        "backend": self.primary,
                        "native_id": text,
                        "id_is_int": is_int,
                        "created_at": now,
                    }
                )
            items = [
                FanOut(
                    entity_type=ENTITY,
                    entity_key=w.key,
                    target=name,
                    op=w.op,
                    snapshot=build_snapshot(
                        result,
                        primary_fields=self.primary_fields,
                        target_fields=fields,
                        given=w.given,
                    ),
                )
                for name, fields in self.targets
            ]
            fanouts.extend((index, row) for row in JournalStore.fanout_rows(items, now))
        return creates, mappings, fanouts, [w.key for w in writes]


def _direct_writes(writes: Sequence[_Written]) -> bool:
    """Whether :meth:`BackendManager._record_direct` records ``writes`` (creates, and updates
    that kept their id); deletes take the SQLAlchemy statements."""
    return all(_direct_record(w) for w in writes)


def _probe_row(intent: Intent, given: Mapping[str, Any]) -> Any:
    """A stand-in queue row for :func:`find_lost_create` when recovering a create intent."""
    from multibackend.journal.store import QueueRow

    return QueueRow(
        id=intent.id,
        entity_type=intent.entity_type,
        entity_key=intent.entity_key,
        target=intent.backend,
        op="create",
        seq=0,
        deleted=False,
        snapshot=encode_fields(given),
        status="recovering",
        attempts=0,
        next_attempt_at=intent.created_at,
        last_error=None,
        lease_owner=None,
        lease_until=None,
        maybe_created=True,
        enqueued_at=intent.created_at,
        updated_at=intent.created_at,
    )


def _same_database(a: str, b: str) -> bool:
    """True when two SQLAlchemy URLs name the same database (driver differences ignored)."""
    try:
        ua, ub = make_url(a), make_url(b)
    except Exception:
        return False
    if ua.get_backend_name() != ub.get_backend_name():
        return False
    if ua.get_backend_name() == "sqlite":
        if not ua.database or not ub.database or ":memory:" in (ua.database, ub.database):
            return False
        return Path(ua.database).resolve() == Path(ub.database).resolve()
    return (ua.host, ua.port or 5432, ua.database, ua.username) == (
        ub.host,
        ub.port or 5432,
        ub.database,
        ub.username,
    )
