"""FaultyBackend: wrap any backend and make it fail, throttle or lag on purpose.

For chaos tests of everything that talks to backends (the manager, the journal worker, the
migration tools). Faults are injected before the call reaches the wrapped backend, so an
injected failure never half-applies a write::

    faulty = FaultyBackend(inner, seed=7)
    faulty.script("create_stream", Fault.UNAVAILABLE, times=3)   # the next 3 creates fail
    faulty.set_rate(Fault.UNAVAILABLE, 0.2)                      # then 20% of every call
    faulty.set_rate(Fault.RATE_LIMITED, 0.05, burst=4, retry_after=0.5)
    faulty.set_latency(fixed=0.01, jitter=0.005, spike_rate=0.01, spike=0.2)
    faulty.down = True                                           # everything Unavailable
    faulty.injected[("create_stream", Fault.UNAVAILABLE)]        # what was injected

Kinds of fault (:class:`Fault`):

* ``UNAVAILABLE`` — :class:`~multibackend.errors.Unavailable` (transient, retryable);
* ``RATE_LIMITED`` — :class:`~multibackend.errors.RateLimited` with ``retry_at``; by rate it
  starts a *burst*: that call and the next ``burst - 1`` calls (any operation) are throttled.
  Throttled calls share one window: they carry the same ``retry_at`` until it has passed, as
  a server's rate limit would;
* ``PERMANENT`` — a non-retryable error, :class:`~multibackend.errors.Conflict` unless the
  ``permanent`` factory says otherwise;
* ``DOWN`` — counted when the ``down`` switch refuses a call (Unavailable);
* ``LATENCY`` / ``SPIKE`` — counted when a call was delayed (fixed plus jitter, or a spike).

Scripted faults are consumed first, in order; then the ``down`` switch; then an ongoing rate
limit burst; then rates, drawn from a ``random.Random(seed)`` so a run can be replayed. Rates
and latency apply to every operation unless ``operations`` names some; ``close`` is exempt from
everything but scripts (releasing resources works even when the service is down). ``name``,
``capabilities`` and ``fields`` are the wrapped backend's, and anything else the wrapper does not
define is looked up on the wrapped backend.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any, Final, Self

import attrs

from multibackend.backend import (
    BulkImportResult,
    Capability,
    ExportResult,
    Health,
    StreamAnalytics,
    StreamBackend,
)
from multibackend.errors import BackendError, Conflict, RateLimited, Unavailable
from multibackend.model import (
    Page,
    Stream,
    StreamDraft,
    StreamId,
    StreamPatch,
    StreamQuery,
    utc_now,
)

__all__ = ["OPERATIONS", "Fault", "FaultyBackend"]

#: Operations faults can be injected into.
OPERATIONS: Final = frozenset(
    {
        "open",
        "close",
        "create_stream",
        "get_stream",
        "update_stream",
        "delete_stream",
        "list_streams",
        "iter_streams",
        "set_pinned",
        "bulk_import",
        "export",
        "analytics",
        "health",
    }
)


class Fault(StrEnum):
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    PERMANENT = "permanent"
    DOWN = "down"
    LATENCY = "latency"
    SPIKE = "spike"


_ERRORS: Final = (Fault.UNAVAILABLE, Fault.RATE_LIMITED, Fault.PERMANENT)


@attrs.frozen
class _Rate:
    probability: float
    operations: frozenset[str] | None


@attrs.frozen
class _Latency:
    fixed: float
    jitter: float
    spike_rate: float
    spike: float
    operations: frozenset[str] | None


def _default_permanent(backend: str, operation: str) -> BackendError:
    return Conflict(f"injected permanent failure in {operation}", backend=backend)


class FaultyBackend:
    """A StreamBackend that injects faults before delegating to ``inner``.

    ``seed`` seeds the random draws of rates, jitter and spikes. ``permanent`` builds the error
    raised for :attr:`Fault.PERMANENT` from (backend name, operation); it must be non-retryable.
    ``retry_after`` is the default delay (seconds) put in ``retry_at`` of injected RateLimited.
    """

    def __init__(
        self,
        inner: StreamBackend,
        *,
        seed: int = 0,
        permanent: Callable[[str, str], BackendError] = _default_permanent,
        retry_after: float = 1.0,
    ) -> None:
        self.inner = inner
        self.down = False
        #: What was injected, by (operation, fault).
        self.injected: Counter[tuple[str, Fault]] = Counter()
        #: Calls seen, by operation (faulted or not).
        self.calls: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._permanent = permanent
        self._retry_after = retry_after
        self._scripts: dict[str, deque[Fault]] = {}
        self._rates: dict[Fault, _Rate] = {}
        self._burst_size = 1
        self._burst_left = 0
        self._burst_retry_after = retry_after
        self._burst_retry_at = utc_now()
        self._latency: _Latency | None = None

    # --- what the wrapper delegates ------------------------------------------------------

    # Properties with setters, so the wrapper satisfies the protocol's settable attributes;
    # setting one sets it on the wrapped backend.
    @property
    def name(self) -> str:
        return self.inner.name

    @name.setter
    def name(self, value: str) -> None:
        self.inner.name = value

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.inner.capabilities

    @capabilities.setter
    def capabilities(self, value: frozenset[Capability]) -> None:
        self.inner.capabilities = value

    @property
    def fields(self) -> frozenset[str]:
        return self.inner.fields

    @fields.setter
    def fields(self, value: frozenset[str]) -> None:
        self.inner.fields = value

    def __getattr__(self, attr: str) -> Any:
        # Only reached for names this class does not define: backend-specific extras.
        if attr == "inner":  # not yet set (copy, unpickling): do not recurse
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def __repr__(self) -> str:
        return f"<FaultyBackend over {self.inner!r}>"

    # --- configuring faults --------------------------------------------------------------

    def script(self, operation: str, fault: Fault, *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` fail with ``fault`` (an error kind),
        after any faults already scripted for it."""
        self._check_operations([operation])
        if fault not in _ERRORS:
            raise ValueError(f"only {', '.join(_ERRORS)} can be scripted, not {fault}")
        self._scripts.setdefault(operation, deque()).extend([fault] * times)

    def set_rate(
        self,
        fault: Fault,
        probability: float,
        *,
        operations: Collection[str] | None = None,
        burst: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Fail each call (of ``operations``, default all) with ``fault`` with ``probability``.

        For RATE_LIMITED, ``burst`` calls in a row are throttled each time it triggers, all
        with ``retry_at`` = trigger time + ``retry_after`` seconds. Probability 0 removes it.
        """
        if fault not in _ERRORS:
            raise ValueError(f"only {', '.join(_ERRORS)} have rates, not {fault}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be within 0..1, got {probability}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if operations is not None:
            self._check_operations(operations)
        if fault is Fault.RATE_LIMITED:
            self._burst_size = burst
            self._burst_retry_after = self._retry_after if retry_after is None else retry_after
        if probability == 0:
            self._rates.pop(fault, None)
        else:
            ops = None if operations is None else frozenset(operations)
            self._rates[fault] = _Rate(probability, ops)

    def set_latency(
        self,
        *,
        fixed: float = 0.0,
        jitter: float = 0.0,
        spike_rate: float = 0.0,
        spike: float = 0.0,
        operations: Collection[str] | None = None,
    ) -> None:
        """Delay calls by ``fixed`` plus uniform(0, ``jitter``) seconds, and with
        ``spike_rate`` probability by ``spike`` seconds more. All zero removes latency."""
        if min(fixed, jitter, spike_rate, spike) < 0 or spike_rate > 1:
            raise ValueError("latency figures must be >= 0 and spike_rate within 0..1")
        if operations is not None:
            self._check_operations(operations)
        if fixed == jitter == spike_rate == 0:
            self._latency = None
            return
        ops = None if operations is None else frozenset(operations)
        self._latency = _Latency(fixed, jitter, spike_rate, spike, ops)

    def heal(self) -> None:
        """Remove every scripted fault, rate, burst, latency and the down switch (counters stay)."""
        self.down = False
        self._scripts.clear()
        self._rates.clear()
        self._burst_left = 0
        self._latency = None

    def count(self, operation: str | None = None, fault: Fault | None = None) -> int:
        """How many faults were injected, optionally only into ``operation`` / of ``fault``."""
        return sum(
            n
            for (op, kind), n in self.injected.items()
            if (operation is None or op == operation) and (fault is None or kind == fault)
        )

    @staticmethod
    def _check_operations(operations: Collection[str]) -> None:
        unknown = sorted(set(operations) - OPERATIONS)
        if unknown:
            raise ValueError(
                f"unknown operation(s) {', '.join(unknown)}; known: {', '.join(sorted(OPERATIONS))}"
            )

    # --- injecting -----------------------------------------------------------------------

    async def _enter(self, operation: str) -> None:
        """Count the call, then delay and/or raise as configured."""
        self.calls[operation] += 1
        await self._delay(operation)
        fault = self._pick(operation)
        if fault is not None:
            self.injected[(operation, fault)] += 1
            raise self._error(operation, fault)

    async def _delay(self, operation: str) -> None:
        lat = self._latency
        if lat is None or (lat.operations is not None and operation not in lat.operations):
            return
        delay = lat.fixed + (self._random.uniform(0, lat.jitter) if lat.jitter else 0.0)
        if delay > 0:
            self.injected[(operation, Fault.LATENCY)] += 1
        if lat.spike_rate and self._random.random() < lat.spike_rate:
            self.injected[(operation, Fault.SPIKE)] += 1
            delay += lat.spike
        if delay > 0:
            await asyncio.sleep(delay)

    def _pick(self, operation: str) -> Fault | None:
        script = self._scripts.get(operation)
        if script:
            return script.popleft()
        if operation == "close":
            return None  # releasing resources works even when the service is down
        if self.down:
            return Fault.DOWN
        if self._burst_left > 0:
            self._burst_left -= 1
            return Fault.RATE_LIMITED
        for fault in _ERRORS:  # a fixed order keeps seeded runs reproducible
            rate = self._rates.get(fault)
            if rate is None or (rate.operations is not None and operation not in rate.operations):
                continue
            if self._random.random() < rate.probability:
                if fault is Fault.RATE_LIMITED:
                    self._burst_left = self._burst_size - 1
                    self._burst_retry_at = utc_now()  # a new window opens (see _error)
                return fault
        return None

    def _error(self, operation: str, fault: Fault) -> BackendError:
        if fault is Fault.RATE_LIMITED:
            # Throttled calls share one window: retry_at stays put until it has passed.
            now = utc_now()
            if self._burst_retry_at <= now:
                self._burst_retry_at = now + timedelta(seconds=self._burst_retry_after)
            return RateLimited(
                f"injected rate limit in {operation}",
                retry_at=self._burst_retry_at,
                backend=self.name,
            )
        if fault is Fault.PERMANENT:
            error = self._permanent(self.name, operation)
            if error.retryable:
                raise TypeError(f"the permanent fault factory returned a retryable {error!r}")
            return error
        if fault is Fault.DOWN:
            return Unavailable(f"backend is down (injected) in {operation}", backend=self.name)
        return Unavailable(f"injected transient failure in {operation}", backend=self.name)

    # --- the protocol, faulted -----------------------------------------------------------

    async def open(self) -> None:
        await self._enter("open")
        await self.inner.open()

    async def close(self) -> None:
        await self._enter("close")
        await self.inner.close()

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

    async def create_stream(self, draft: StreamDraft) -> Stream:
        await self._enter("create_stream")
        return await self.inner.create_stream(draft)

    async def get_stream(self, id: StreamId) -> Stream:
        await self._enter("get_stream")
        return await self.inner.get_stream(id)

    async def update_stream(self, id: StreamId, patch: StreamPatch) -> Stream:
        await self._enter("update_stream")
        return await self.inner.update_stream(id, patch)

    async def delete_stream(self, id: StreamId) -> None:
        await self._enter("delete_stream")
        await self.inner.delete_stream(id)

    async def list_streams(self, query: StreamQuery) -> Page[Stream]:
        await self._enter("list_streams")
        return await self.inner.list_streams(query)

    async def iter_streams(self, query: StreamQuery | None = None) -> AsyncIterator[Stream]:
        """The wrapped backend's iteration, with a fault check before the first stream and
        before each further ``iter_page_size`` streams (a page), so walks can fail midway."""
        page_size = int(getattr(self.inner, "iter_page_size", 100))
        await self._enter("iter_streams")
        seen = 0
        async for stream in self.inner.iter_streams(query):
            if seen and seen % page_size == 0:
                await self._enter("iter_streams")
            seen += 1
            yield stream

    async def set_pinned(self, id: StreamId, pinned: bool) -> Stream:
        await self._enter("set_pinned")
        return await self.inner.set_pinned(id, pinned)

    async def bulk_import(self, drafts: Sequence[StreamDraft]) -> BulkImportResult:
        await self._enter("bulk_import")
        result: BulkImportResult = await self.inner.bulk_import(drafts)  # type: ignore[attr-defined]
        return result

    async def export(self, query: StreamQuery | None = None) -> ExportResult:
        await self._enter("export")
        result: ExportResult = await self.inner.export(query)  # type: ignore[attr-defined]
        return result

    async def analytics(self, id: StreamId) -> StreamAnalytics:
        await self._enter("analytics")
        result: StreamAnalytics = await self.inner.analytics(id)  # type: ignore[attr-defined]
        return result

    async def health(self) -> Health:
        await self._enter("health")
        result: Health = await self.inner.health()  # type: ignore[attr-defined]
        return result

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        # Not faulted: faults inside a transaction come from the faulted calls made in it.
        result: AbstractAsyncContextManager[Any] = self.inner.transaction()  # type: ignore[attr-defined]
        return result
