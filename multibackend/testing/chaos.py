"""Convergence under chaos: concurrent writers, faulty secondaries, a sync worker killed at random.

Used by ``tests/chaos`` (about 1,000 operations) and ``benchmarks/chaos.py`` (10,000). The
scenario, on real durable parts (DESIGN.md §5):

* primary ``legacy``: the ``sql`` backend on a SQLite file with the legacy table; the journal
  lives in the same file (transactional outbox);
* secondary ``copy_a``: ``sql`` on its own SQLite file behind :class:`FaultyBackend` (transient
  failures, bursts of ``RateLimited``, latency spikes) that also refuses, permanently, every
  stream whose source starts with ``poison`` (these must end parked, and nothing else);
* secondary ``copy_b``: the same faults, and it is down for a stretch of the run;
* secondary ``streamsource``: the StreamSource client over HTTP against an emulator the caller
  runs, which injects its own 500s (some *after* applying a create: unknown outcomes);
* writers (in the caller's process) push a random mix of creates, updates, deletes, pins and
  unpins through a :class:`BackendManager` with ``worker="external"``;
* the sync worker is a separate process (``python -m multibackend.testing.chaos worker PLAN``)
  that builds its faulty targets itself, is SIGKILLed at random points ``kills`` times and
  restarted each time.

At the end the caller waits until nothing is outstanding and checks, with
:func:`multibackend.testing.compare.compare_backends`, that every pair of backends agrees.
:func:`run_chaos` does all of it and returns a :class:`ChaosReport`. Only plugins loaded through
the registry are used, so the core does not depend on them; the emulator is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs
from sqlalchemy.exc import OperationalError

from multibackend.backend import StreamBackend
from multibackend.errors import Unavailable, ValidationFailed
from multibackend.journal.retry import BreakerPolicy, RetryPolicy
from multibackend.manager import BackendManager
from multibackend.model import (
    Kind,
    Platform,
    Stream,
    StreamDraft,
    StreamId,
    StreamPatch,
    StreamQuery,
    StreamStatus,
)
from multibackend.registry import load_backend
from multibackend.testing.compare import Difference, compare_backends
from multibackend.testing.faulty import OPERATIONS, Fault, FaultyBackend

__all__ = ["ChaosPlan", "ChaosReport", "run_chaos"]

T = TypeVar("T")

PRIMARY = "legacy"
SECONDARIES = ("copy_a", "copy_b", "streamsource")
POISONED = "copy_a"
DOWN = "copy_b"
#: Environment variable carrying the StreamSource password to the worker process (not argv).
PASSWORD_ENV = "MULTIBACKEND_CHAOS_PASSWORD"


@attrs.frozen(kw_only=True)
class ChaosPlan:
    """What a chaos run does. Times are seconds; rates are probabilities per call."""

    work: Path
    streamsource_url: str
    email: str
    password: str = attrs.field(repr=False)
    operations: int = 1000
    writers: int = 4
    #: Writes per second over all writers (so the worker kills land while writes flow).
    write_rate: float = 250.0
    transient_rate: float = 0.2
    rate_limited_rate: float = 0.01
    burst: int = 5
    retry_after: float = 0.2
    spike_rate: float = 0.02
    spike: float = 0.1
    #: copy_b is down for ``down_for`` seconds, from ``down_at`` after the run starts (filled
    #: by run_chaos: shortly after the last restart, so the worker that drains sees it).
    down_at: float = 0.0
    down_for: float = 3.0
    #: One create in ``poison_every`` has a source copy_a refuses permanently.
    poison_every: int = 40
    kills: int = 3
    seed: int = 1
    converge_timeout: float = 120.0
    #: Absolute (epoch) start; filled by run_chaos so worker processes share the schedule.
    started: float = 0.0

    def to_json(self) -> str:
        data = attrs.asdict(self)
        data.pop("password")
        data["work"] = str(self.work)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str, password: str) -> ChaosPlan:
        data = json.loads(text)
        data["work"] = Path(data["work"])
        return cls(password=password, **data)


@attrs.frozen(kw_only=True)
class ChaosReport:
    """What happened in a run (see ``benchmarks/chaos.py`` for the figures it prints)."""

    operations: Counter[str]
    #: Writes repeated because the primary's database was busy (rolled back, nothing happened).
    primary_busy: int
    write_seconds: float
    converge_seconds: float
    kills: int
    faults: Counter[str]
    worker_stats: Counter[str]
    adoptions: int
    live: int
    poisoned: set[str]
    #: Differences explained by the poisoned entities being absent from copy_a (expected).
    poison_gaps: int
    parked: set[tuple[str, str]]
    differences: dict[str, list[Difference]]
    outstanding: int


# --- backends -------------------------------------------------------------------------------


def _db(plan: ChaosPlan, name: str) -> str:
    return f"sqlite+aiosqlite:///{plan.work}/{name}.db"


def build_backends(plan: ChaosPlan, *, faulty: bool) -> list[StreamBackend]:
    """The four backends; ``faulty`` wraps the sql secondaries as the worker sees them."""
    legacy = load_backend(
        "sql",
        name=PRIMARY,
        url=_db(plan, PRIMARY),
        schema="streamsource-legacy",
        create_schema=True,
    )
    copies: list[StreamBackend] = [
        load_backend("sql", name=n, url=_db(plan, n), create_schema=True)
        for n in ("copy_a", "copy_b")
    ]
    remote = load_backend(
        "streamsource",
        name="streamsource",
        base_url=plan.streamsource_url,
        email=plan.email,
        password=plan.password,
        requests_per_minute=1_000_000,
        max_retries=1,
        retry_backoff=0.05,
        timeout=10.0,
    )
    if faulty:
        copies = [_Poisoning(c, plan, seed=plan.seed * 100 + i) for i, c in enumerate(copies)]
    return [legacy, *copies, remote]


class _Poisoning(FaultyBackend):
    """FaultyBackend with the plan's faults; on copy_a, ``poison`` sources fail permanently."""

    def __init__(self, inner: StreamBackend, plan: ChaosPlan, *, seed: int) -> None:
        # Each worker process draws differently, so a restart does not replay the same faults.
        super().__init__(inner, seed=seed + os.getpid(), retry_after=plan.retry_after)
        ops = OPERATIONS - {"open"}  # the worker process must start; calls fail after that
        self.set_rate(Fault.UNAVAILABLE, plan.transient_rate, operations=ops)
        self.set_rate(
            Fault.RATE_LIMITED,
            plan.rate_limited_rate,
            operations=ops,
            burst=plan.burst,
            retry_after=plan.retry_after,
        )
        self.set_latency(spike_rate=plan.spike_rate, spike=plan.spike, operations=ops)
        self.poison = inner.name == POISONED

    def _refuse(self, operation: str, source: object) -> None:
        if self.poison and isinstance(source, str) and source.startswith("poison"):
            self.injected[(operation, Fault.PERMANENT)] += 1
            raise ValidationFailed(f"injected permanent refusal of {source}", backend=self.name)

    async def create_stream(self, draft: StreamDraft) -> Stream:
        await self._enter("create_stream")
        self._refuse("create_stream", draft.source)
        return await self.inner.create_stream(draft)


# --- the worker process -----------------------------------------------------------------------


class _AdoptionCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("adopting"):
            self.count += 1


def _fault_totals(faulty: dict[str, FaultyBackend]) -> dict[str, int]:
    """Faults injected, by "target:kind", summed over operations (latency is not a fault)."""
    totals: Counter[str] = Counter()
    for name, fb in faulty.items():
        for (_op, kind), n in fb.injected.items():
            if kind is not Fault.LATENCY:
                totals[f"{name}:{kind}"] += n
    return dict(totals)


async def _worker_main(plan: ChaosPlan, stats_path: Path) -> None:
    backends = build_backends(plan, faulty=True)
    faulty = {b.name: b for b in backends if isinstance(b, FaultyBackend)}
    adoptions = _AdoptionCounter()
    journal_log = logging.getLogger("multibackend.journal")
    journal_log.addHandler(adoptions)
    journal_log.setLevel(logging.INFO)
    manager = BackendManager(
        backends,
        primary=PRIMARY,
        journal_url=_db(plan, PRIMARY),
        worker="external",
        retry=RetryPolicy(max_attempts=10_000, base=0.01, cap=0.3),
        breaker=BreakerPolicy(threshold=8, cooldown=0.05, cap=0.3),
        lease_seconds=1.0,
        batch_size=50,
    )
    async with manager:
        worker = manager.worker
        assert worker is not None
        worker.poll_interval = 0.05

        def dump() -> None:
            data = {
                "stats": attrs.asdict(worker.stats),
                "injected": _fault_totals(faulty),
                "adoptions": adoptions.count,
            }
            tmp = stats_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, stats_path)

        async def chores() -> None:
            down = faulty[DOWN]
            while True:
                t = time.time() - plan.started
                down.down = plan.down_at <= t < plan.down_at + plan.down_for
                dump()
                await asyncio.sleep(0.05)

        task = asyncio.create_task(chores())
        print("ready", flush=True)
        try:
            await worker.run()
        finally:
            task.cancel()
            dump()


# --- the writers ----------------------------------------------------------------------------


@attrs.define
class _World:
    """What the writers believe: live primary ids, which are poisoned, what was done."""

    rng: random.Random
    live: dict[StreamId, bool] = attrs.field(factory=dict)  # id -> poisoned
    busy: set[StreamId] = attrs.field(factory=set)
    ops: Counter[str] = attrs.field(factory=Counter)
    primary_busy: int = 0
    created: int = 0


_OPS = ("create", "update", "pin", "unpin", "delete")
_WEIGHTS = (35, 35, 10, 8, 12)


def _random_patch(rng: random.Random) -> StreamPatch:
    choices: dict[str, Any] = {
        "title": lambda: rng.choice([None, f"title {rng.randrange(1000)}", "Ünïcødé ✓"]),
        "status": lambda: rng.choice(list(StreamStatus)),
        "city": lambda: rng.choice([None, "Austin", "Zürich"]),
        "notes": lambda: rng.choice([None, f"note {rng.randrange(1000)}"]),
        "kind": lambda: rng.choice(list(Kind)),
        "platform": lambda: rng.choice([None, *Platform]),
    }
    picked = rng.sample(sorted(choices), rng.randint(1, 3))
    return StreamPatch(**{name: choices[name]() for name in picked})


async def _retrying(world: _World, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, again after a short pause when the primary's database is busy: the outbox
    transaction rolled back, so nothing happened and the write can be repeated (as an app
    would). Counted in ``primary_busy``."""
    for attempt in range(20):
        try:
            return await call()
        except (Unavailable, OperationalError):
            # OperationalError: the journal's own reads on the shared engine (see the report).
            if attempt == 19:
                raise
            world.primary_busy += 1
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


async def _writer(manager: BackendManager, world: _World, quota: int, pace: float) -> None:
    rng = world.rng
    for _ in range(quota):
        started = time.monotonic()
        op = rng.choices(_OPS, _WEIGHTS)[0]
        candidates = [i for i in world.live if i not in world.busy]
        if op != "create" and not candidates:
            op = "create"
        if op == "create":
            world.created += 1
            n = world.created
            poisoned = n % _POISON_EVERY[0] == 0
            source = f"{'poison' if poisoned else 'src'}{n}"
            draft = StreamDraft(
                source=source,
                link=f"https://twitch.tv/{source}",
                platform=rng.choice(list(Platform)),
                kind=rng.choice(list(Kind)),
                notes=rng.choice([None, f"from writer, {n}"]),
                title=f"t{n}",
            )
            stream = await _retrying(world, partial(manager.create_stream, draft))
            world.live[stream.id] = poisoned
        else:
            target = rng.choice(candidates)
            if op == "delete" and world.live[target]:
                op = "update"  # poisoned entities stay, so their parked rows stay too
            world.busy.add(target)
            try:
                if op == "update":
                    patch = _random_patch(rng)
                    await _retrying(world, partial(manager.update_stream, target, patch))
                elif op in ("pin", "unpin"):
                    pin = op == "pin"
                    await _retrying(world, partial(manager.set_pinned, target, pin))
                else:
                    await _retrying(world, partial(manager.delete_stream, target))
                    del world.live[target]
            finally:
                world.busy.discard(target)
        world.ops[op] += 1
        await asyncio.sleep(max(0.0, pace - (time.monotonic() - started)))


# Set per run (the writers read it without threading it through every call).
_POISON_EVERY = [40]


# --- orchestration --------------------------------------------------------------------------


async def _spawn_worker(plan: ChaosPlan, index: int) -> asyncio.subprocess.Process:
    env = dict(os.environ, **{PASSWORD_ENV: plan.password})
    log_path = plan.work / f"worker-{index}.log"
    with log_path.open("wb") as errors:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "multibackend.testing.chaos",
            "worker",
            plan.to_json(),
            str(plan.work / f"worker-{index}.json"),
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
            env=env,
        )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"ready":
        await proc.wait()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"chaos worker {index} did not start (exit {proc.returncode}):\n{tail}")
    return proc


def _collect(work: Path) -> tuple[Counter[str], Counter[str], int]:
    faults: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    adoptions = 0
    for path in sorted(work.glob("worker-*.json")):
        data = json.loads(path.read_text())
        faults.update(data["injected"])
        stats.update(data["stats"])
        adoptions += data["adoptions"]
    return faults, stats, adoptions


async def _id_map(
    manager: BackendManager, a: str, b: str, ids: list[StreamId]
) -> dict[StreamId, StreamId]:
    assert manager.store is not None
    found = await manager.store.translate_ids("stream", a, ids, b)
    # Keys come back as text; compare_backends matches ids by their text anyway.
    return cast(dict[StreamId, StreamId], found)


async def _explained_by_poison(
    manager: BackendManager, d: Difference, a: str, b: str, poisoned: set[str]
) -> bool:
    """A poisoned entity missing from copy_a (and so unmatched from copy_a's side)."""
    assert manager.store is not None
    if d.kind == "missing" and b == POISONED and d.a_id is not None:
        key = await manager.store.entity_key_of("stream", a, d.a_id)
    elif d.kind == "unexpected" and a == POISONED and d.b_id is not None:
        key = await manager.store.entity_key_of("stream", b, d.b_id)
    else:
        return False
    return key in poisoned


async def run_chaos(plan: ChaosPlan, emulator: Any) -> ChaosReport:
    """Run the scenario against ``emulator`` (a running StreamSource emulator handle whose
    ``base_url`` is ``plan.streamsource_url``) and report. Raises nothing on divergence: the
    report says what differs; the caller asserts."""
    rng = random.Random(plan.seed)
    expected_write_time = plan.operations / plan.write_rate
    kill_at = sorted(rng.uniform(0.3, max(0.6, expected_write_time)) for _ in range(plan.kills))
    plan = attrs.evolve(plan, started=time.time(), down_at=(kill_at or [0.0])[-1] + 0.5)
    _POISON_EVERY[0] = plan.poison_every
    manager = BackendManager(
        build_backends(plan, faulty=False),
        primary=PRIMARY,
        journal_url=_db(plan, PRIMARY),
        worker="external",
    )
    emulator.set_faults(error_rate=plan.transient_rate / 2, error_statuses=[500, 503])
    async with manager:
        world = _World(rng=rng)
        pace = plan.writers / plan.write_rate
        quotas = [plan.operations // plan.writers] * plan.writers
        quotas[0] += plan.operations - sum(quotas)

        workers: list[asyncio.subprocess.Process] = []
        writes_task: asyncio.Future[Any] | None = None
        try:
            workers.append(await _spawn_worker(plan, 0))
            writes = asyncio.gather(*(_writer(manager, world, q, pace) for q in quotas))
            writes_task = asyncio.ensure_future(writes)
            t0 = time.monotonic()
            for i, at in enumerate(kill_at, start=1):
                await asyncio.sleep(max(0.0, plan.started + at - time.time()))
                # An unknown outcome on the wire as well: the emulator applies a create, then 500s.
                emulator.fail_next(1, status=500, method="POST", path="/api/v1/streams", after=True)
                workers[-1].send_signal(signal.SIGKILL)
                await workers[-1].wait()
                workers.append(await _spawn_worker(plan, i))
            await writes_task
            write_seconds = time.monotonic() - t0

            # Converge: the last worker drains everything, faults still on (copy_b is back up).
            t1 = time.monotonic()
            deadline = t1 + plan.converge_timeout
            while True:
                status = await manager.sync_status()
                if status.outstanding == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            converge_seconds = time.monotonic() - t1
            workers[-1].send_signal(signal.SIGTERM)
            await workers[-1].wait()
        finally:
            # On any failure, leave no worker process or writer behind.
            if writes_task is not None and not writes_task.done():
                writes_task.cancel()
                with contextlib.suppress(BaseException):
                    await writes_task
            for proc in workers:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        emulator.clear_faults()

        assert manager.store is not None
        parked_rows = await manager.store.rows(status="parked", limit=1_000_000)
        parked = {(r.entity_key, r.target) for r in parked_rows}
        live_ids = list(world.live)
        poisoned_keys: set[str] = set()
        for pid, poisoned in world.live.items():
            if poisoned:
                key = await manager.store.entity_key_of("stream", PRIMARY, pid)
                assert key is not None
                poisoned_keys.add(key)

        differences: dict[str, list[Difference]] = {}
        poison_gaps = 0
        names = [PRIMARY, *SECONDARIES]
        primary_ids = [s.id async for s in manager.primary.iter_streams(StreamQuery())]
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                ids_a = (
                    primary_ids
                    if a == PRIMARY
                    else list((await _id_map(manager, PRIMARY, a, primary_ids)).values())
                )
                id_map = await _id_map(manager, a, b, ids_a)
                diffs = await compare_backends(manager.backends[a], manager.backends[b], id_map)
                kept = []
                for d in diffs:
                    if await _explained_by_poison(manager, d, a, b, poisoned_keys):
                        poison_gaps += 1
                    else:
                        kept.append(d)
                differences[f"{a}~{b}"] = kept
        missing_on_primary = [i for i in live_ids if i not in set(primary_ids)]
        for pid in missing_on_primary:
            differences.setdefault("writers~legacy", []).append(
                Difference(kind="missing", a_id=pid)
            )
        if len(primary_ids) != len(live_ids):
            differences.setdefault("writers~legacy", []).append(
                Difference(kind="unexpected", a_value=len(live_ids), b_value=len(primary_ids))
            )
        outstanding = (await manager.sync_status()).outstanding

    faults, stats, adoptions = _collect(plan.work)
    counters = emulator.counters()
    faults["streamsource:http_500"] += counters.faults
    return ChaosReport(
        operations=world.ops,
        primary_busy=world.primary_busy,
        write_seconds=write_seconds,
        converge_seconds=converge_seconds,
        kills=plan.kills,
        faults=faults,
        worker_stats=stats,
        adoptions=adoptions,
        live=len(live_ids),
        poisoned=poisoned_keys,
        poison_gaps=poison_gaps,
        parked=parked,
        differences=differences,
        outstanding=outstanding,
    )


def _main(argv: list[str]) -> None:
    mode, plan_json, stats = argv
    if mode != "worker":
        raise SystemExit(f"unknown mode {mode!r}")
    plan = ChaosPlan.from_json(plan_json, os.environ[PASSWORD_ENV])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await _worker_main(plan, Path(stats))

    asyncio.run(main())


if __name__ == "__main__":
    _main(sys.argv[1:])
