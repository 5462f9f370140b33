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


async def test_sync_status_carries_write_and_shadow_counters(tmp_path: Path) -> None:
    from multibackend.errors import NotFound
    from multibackend.metrics import REGISTRY
    from multibackend.model import StreamPatch

    REGISTRY.reset()
    manager = BackendManager(
        [load_backend("memory", name="p"), load_backend("memory", name="s1")],
        primary="p",
        journal_url=f"sqlite:///{tmp_path}/j.db",
        shadow_backend="s1",
        shadow_sample=1.0,
        shadow_timeout=10.0,
    )
    async with manager:
        made = await manager.create_stream(StreamDraft(source="a", link="https://x.com"))
        with pytest.raises(NotFound):
            await manager.update_stream(999, StreamPatch(city="x"))
        assert await manager.drain(timeout=10)
        await manager.get_stream(made.id)
        assert manager.shadow is not None
        await manager.shadow.wait_idle()
        status = await manager.sync_status()
    counted = {(c.name, c.labels): c.value for c in status.counters}
    writes = "multibackend_writes_total"
    assert counted[(writes, (("backend", "p"), ("op", "create"), ("outcome", "ok")))] == 1
    assert counted[(writes, (("backend", "p"), ("op", "update"), ("outcome", "NotFound")))] == 1
    shadow = ("multibackend_shadow_reads_total", (("candidate", "s1"), ("outcome", "match")))
    assert counted[shadow] == 1
    assert counted[("multibackend_fanout_applied_total", (("target", "s1"),))] == 1


def test_sync_run_serves_metrics(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "mb.toml"
    config.write_text(
        '[backends.p]\nplugin = "sql"\nurl = "sqlite:///p.db"\ncreate_schema = true\n'
        '[backends.s]\nplugin = "sql"\nurl = "sqlite:///s.db"\ncreate_schema = true\n'
        '[manager]\nprimary = "p"\nsecondaries = ["s"]\nworker = "external"\n'
    )
    from click.testing import CliRunner

    from multibackend.cli import main

    made = CliRunner().invoke(
        main, ["streams", "-c", str(config), "create", "--source", "a", "--link", "https://a.b"]
    )
    assert made.exit_code == 0, made.output
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "multibackend",
            "sync",
            "-c",
            str(config),
            "run",
            "--metrics-port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        port = None
        for _ in range(30):
            line = proc.stderr.readline()
            if "metrics on http://127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1].split("/")[0])
                break
        assert port is not None
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for _ in range(100):  # the journal's gauges refresh every few seconds
            samples = scrape(port)
            if samples.get("multibackend_fanout_pending") == [({"target": "s"}, 0.0)]:
                break
            time.sleep(0.1)
        assert samples["multibackend_fanout_pending"] == [({"target": "s"}, 0.0)]
        assert samples["multibackend_fanout_applied_total"] == [({"target": "s"}, 1.0)]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
