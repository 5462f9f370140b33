"""What operators watch: counters kept by the library, gauges read from the journal, and an
optional Prometheus exporter.

Counters (cumulative since the process started; kept in :data:`REGISTRY`):

==========================================  ======================  ===========================
name                                        labels                  counted by
==========================================  ======================  ===========================
``multibackend_writes_total``               backend, op, outcome    the manager (primary writes:
                                                                    ``ok`` or the error's type)
``multibackend_fanout_applied_total``       target                  sync workers
``multibackend_fanout_retries_total``       target                  sync workers
``multibackend_fanout_parked_total``        target                  sync workers
``multibackend_rate_limit_waits_total``     target                  sync workers (target paused
                                                                    until the server's reset)
``multibackend_shadow_reads_total``         candidate, outcome      shadow reads (``match``,
                                                                    ``mismatch``, ``error``,
                                                                    ``timeout``)
==========================================  ======================  ===========================

Gauges, read from the journal when scraped (refreshed every ``refresh`` seconds), per target:
``multibackend_fanout_pending``, ``multibackend_fanout_in_flight``, ``multibackend_fanout_parked``,
``multibackend_fanout_oldest_pending_seconds`` (the lag) and ``multibackend_target_paused``.

The same figures are in :meth:`multibackend.BackendManager.sync_status` (``counters``), so an app
without Prometheus can log them. The exporter needs the ``metrics`` extra
(``pip install 'multibackend[metrics]'``, which brings ``prometheus-client``); it serves on
127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from multibackend.manager import BackendManager, SyncStatus

__all__ = ["REGISTRY", "CounterSample", "MetricsExporter", "MetricsRegistry"]

log = logging.getLogger("multibackend.metrics")

#: Counter names and their help texts.
COUNTERS: dict[str, str] = {
    "multibackend_writes_total": "Writes to the primary through the manager, by outcome.",
    "multibackend_fanout_applied_total": "Journal entries applied to a secondary.",
    "multibackend_fanout_retries_total": "Journal entries rescheduled after a retryable error.",
    "multibackend_fanout_parked_total": "Journal entries parked (permanent error or exhausted).",
    "multibackend_rate_limit_waits_total": "Times a secondary throttled the worker (paused).",
    "multibackend_shadow_reads_total": "Shadow reads repeated on a candidate, by outcome.",
}


@attrs.frozen
class CounterSample:
    """One counter value: ``name``, its labels, and the value."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


class MetricsRegistry:
    """In-process counters keyed by name and labels. Cheap enough for every write."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` with ``labels``."""
        if name not in COUNTERS:
            raise KeyError(f"unknown counter {name!r}")
        key = (name, tuple(sorted(labels.items())))
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        """The counter's value for exactly these labels (0 when never counted)."""
        return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every label set that includes ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self._values.items() if n == name and want <= set(ls))

    def samples(self) -> list[CounterSample]:
        """Every counter value, sorted by name and labels."""
        return [CounterSample(n, ls, v) for (n, ls), v in sorted(self._values.items())]

    def reset(self) -> None:
        """Forget every value (tests)."""
        self._values.clear()


#: The process-wide registry the library counts into.
REGISTRY = MetricsRegistry()


def gauge_samples(status: SyncStatus) -> Iterator[tuple[str, str, float]]:
    """(gauge name, target, value) for each target of a sync status."""
    for target, st in status.targets.items():
        yield "multibackend_fanout_pending", target, float(st.pending)
        yield "multibackend_fanout_in_flight", target, float(st.leased)
        yield "multibackend_fanout_parked", target, float(st.parked)
        yield (
            "multibackend_fanout_oldest_pending_seconds",
            target,
            float(st.oldest_pending_age or 0.0),
        )
        yield "multibackend_target_paused", target, 1.0 if st.paused_until else 0.0


GAUGES: dict[str, str] = {
    "multibackend_fanout_pending": "Journal entries waiting for a secondary.",
    "multibackend_fanout_in_flight": "Journal entries being applied (leased by a worker).",
    "multibackend_fanout_parked": "Journal entries parked, waiting for an operator.",
    "multibackend_fanout_oldest_pending_seconds": "Age of the oldest outstanding entry (lag).",
    "multibackend_target_paused": "1 while a secondary is paused (rate limit or breaker).",
}


class MetricsExporter:
    """Serves the counters and the journal's gauges for Prometheus on ``host:port``.

    Gauges come from ``manager.sync_status()``, refreshed in the background every ``refresh``
    seconds (a scrape never waits for the database). Use as an async context manager inside the
    process that runs the manager or ``sync run``.
    """

    def __init__(
        self,
        manager: BackendManager,
        port: int,
        *,
        host: str = "127.0.0.1",
        refresh: float = 5.0,
        registry: MetricsRegistry = REGISTRY,
    ) -> None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            from multibackend.errors import ConfigError

            raise ConfigError(
                "the metrics exporter needs prometheus-client: pip install 'multibackend[metrics]'"
            ) from None
        self.manager = manager
        self.port = port
        self.host = host
        self.refresh = refresh
        self.registry = registry
        self._status: SyncStatus | None = None
        self._task: asyncio.Task[None] | None = None
        self._server: Any = None

    async def __aenter__(self) -> MetricsExporter:
        from prometheus_client import CollectorRegistry, start_http_server

        await self._refresh_once()
        prom = CollectorRegistry(auto_describe=False)
        prom.register(_Collector(self))
        self._server, _thread = start_http_server(self.port, addr=self.host, registry=prom)
        self.port = self._server.server_port
        self._task = asyncio.create_task(self._refresher())
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    async def _refresh_once(self) -> None:
        try:
            self._status = await self.manager.sync_status()
        except Exception:
            log.warning("metrics: could not read the sync status", exc_info=True)

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            await self._refresh_once()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        by_name: dict[str, list[Any]] = {}
        for sample in self.registry.samples():
            by_name.setdefault(sample.name, []).append(sample)
        for name, help_text in COUNTERS.items():
            samples = by_name.get(name, [])
            label_names = sorted({k for s in samples for k, _ in s.labels})
            family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=label_names)
            for s in samples:
                values: Mapping[str, str] = dict(s.labels)
                family.add_metric([values.get(k, "") for k in label_names], s.value)
            yield family
        status = self._status
        for name, help_text in GAUGES.items():
            gauge = GaugeMetricFamily(name, help_text, labels=["target"])
            if status is not None:
                for gname, target, value in gauge_samples(status):
                    if gname == name:
                        gauge.add_metric([target], value)
            yield gauge


class _Collector:
    def __init__(self, exporter: MetricsExporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Any]:
        return self.exporter.collect()
