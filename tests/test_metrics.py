"""Counters, the journal's gauges, and the Prometheus exporter over real HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from multibackend.manager import BackendManager
from multibackend.metrics import MetricsExporter, MetricsRegistry
from multibackend.model import StreamDraft
from multibackend.registry import load_backend


def test_counters_add_up_by_labels() -> None:
    registry = MetricsRegistry()
    registry.inc("multibackend_writes_total", backend="legacy", op="create", outcome="ok")
    registry.inc("multibackend_writes_total", backend="legacy", op="create", outcome="ok")
    registry.inc("multibackend_writes_total", backend="legacy", op="update", outcome="NotFound")
    assert (
        registry.value("multibackend_writes_total", backend="legacy", op="create", outcome="ok")
        == 2
    )
    assert registry.total("multibackend_writes_total", backend="legacy") == 3
    assert registry.total("multibackend_writes_total", outcome="NotFound") == 1
    with pytest.raises(KeyError):
        registry.inc("no_such_counter")


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


async def test_exporter_serves_counters_and_lag(tmp_path: Path) -> None:
    registry = MetricsRegistry()
    registry.inc("multibackend_fanout_retries_total", 3, target="s1")
    manager = BackendManager(
        [load_backend("memory", name="p"), load_backend("memory", name="s1")],
        primary="p",
        worker="external",
        journal_url=f"sqlite:///{tmp_path}/j.db",
    )
    async with manager:
        for i in range(4):
            await manager.create_stream(StreamDraft(source=f"s{i}", link="https://x.com"))
        async with MetricsExporter(manager, 0, refresh=0.05, registry=registry) as exporter:
            samples = await asyncio.to_thread(scrape, exporter.port)
            assert samples["multibackend_fanout_pending"] == [({"target": "s1"}, 4.0)]
            assert samples["multibackend_fanout_retries_total"] == [({"target": "s1"}, 3.0)]
            assert samples["multibackend_fanout_oldest_pending_seconds"][0][1] >= 0
            assert manager.worker is not None
            await manager.worker.drain(timeout=10)
            await asyncio.sleep(0.2)  # one refresh
            samples = await asyncio.to_thread(scrape, exporter.port)
            assert samples["multibackend_fanout_pending"] == [({"target": "s1"}, 0.0)]
