"""FaultyBackend injects failures, throttling and latency; otherwise it is what it wraps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from multibackend.backend import StreamBackend
from multibackend.errors import Conflict, NotFound, PermissionDenied, RateLimited, Unavailable
from multibackend.model import StreamDraft, StreamPatch, StreamQuery, utc_now
from multibackend.registry import load_backend
from multibackend.testing.conformance import BackendConformance
from multibackend.testing.faulty import Fault, FaultyBackend


def draft(n: int) -> StreamDraft:
    return StreamDraft(source=f"s{n}", link=f"https://x.test/{n}")


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyBackend]:
    async with FaultyBackend(load_backend("memory", name="inner"), seed=42) as backend:
        yield backend


class TestFaultyPassthroughConformance(BackendConformance):
    """With no fault configured the wrapper is indistinguishable from the wrapped backend."""

    @pytest.fixture
    async def backend(self) -> AsyncIterator[StreamBackend]:
        async with FaultyBackend(load_backend("memory", name="wrapped")) as backend:
            yield backend


async def test_delegates_name_capabilities_fields_and_extras(faulty: FaultyBackend) -> None:
    inner = faulty.inner
    assert faulty.name == "inner"
    assert faulty.capabilities == inner.capabilities
    assert faulty.fields == inner.fields
    assert faulty.options is inner.options  # type: ignore[attr-defined]
    assert isinstance(faulty, StreamBackend)


async def test_scripted_failures_hit_the_next_calls_of_that_operation(
    faulty: FaultyBackend,
) -> None:
    faulty.script("create_stream", Fault.UNAVAILABLE, times=3)
    for _ in range(3):
        with pytest.raises(Unavailable) as info:
            await faulty.create_stream(draft(1))
        assert info.value.retryable
        assert info.value.backend == "inner"
        # Other operations are not affected by a script for create_stream.
        assert (await faulty.list_streams(StreamQuery())).total_count == 0
    stream = await faulty.create_stream(draft(1))
    assert (await faulty.get_stream(stream.id)).source == "s1"
    assert faulty.injected[("create_stream", Fault.UNAVAILABLE)] == 3
    assert faulty.count() == 3
    assert faulty.calls["create_stream"] == 4


async def test_scripted_faults_come_in_order(faulty: FaultyBackend) -> None:
    faulty.script("get_stream", Fault.UNAVAILABLE)
    faulty.script("get_stream", Fault.PERMANENT)
    faulty.script("get_stream", Fault.RATE_LIMITED)
    with pytest.raises(Unavailable):
        await faulty.get_stream(1)
    with pytest.raises(Conflict) as permanent:
        await faulty.get_stream(1)
    assert not permanent.value.retryable
    with pytest.raises(RateLimited) as limited:
        await faulty.get_stream(1)
    assert limited.value.retry_at is not None
    with pytest.raises(NotFound):  # the script is used up: the real answer comes through
        await faulty.get_stream(1)
    assert faulty.count(operation="get_stream") == 3
    assert faulty.count(fault=Fault.PERMANENT) == 1


async def test_permanent_error_is_configurable_and_must_not_be_retryable() -> None:
    inner = load_backend("memory", name="inner")
    faulty = FaultyBackend(
        inner,
        permanent=lambda name, op: PermissionDenied(f"no {op} for you", backend=name),
    )
    faulty.script("create_stream", Fault.PERMANENT)
    with pytest.raises(PermissionDenied, match="no create_stream for you"):
        await faulty.create_stream(draft(1))

    sloppy = FaultyBackend(inner, permanent=lambda name, op: Unavailable("oops", backend=name))
    sloppy.script("create_stream", Fault.PERMANENT)
    with pytest.raises(TypeError, match="retryable"):
        await sloppy.create_stream(draft(1))


async def test_failed_calls_never_reach_the_wrapped_backend(faulty: FaultyBackend) -> None:
    created = await faulty.create_stream(draft(1))
    faulty.script("update_stream", Fault.UNAVAILABLE)
    faulty.script("delete_stream", Fault.PERMANENT)
    with pytest.raises(Unavailable):
        await faulty.update_stream(created.id, StreamPatch(title="changed"))
    with pytest.raises(Conflict):
        await faulty.delete_stream(created.id)
    assert await faulty.inner.get_stream(created.id) == created


async def test_rates_are_seeded_and_replayable() -> None:
    async def pattern(seed: int) -> list[bool]:
        faulty = FaultyBackend(load_backend("memory"), seed=seed)
        faulty.set_rate(Fault.UNAVAILABLE, 0.3)
        outcome = []
        for _ in range(200):
            try:
                await faulty.list_streams(StreamQuery())
                outcome.append(True)
            except Unavailable:
                outcome.append(False)
        assert outcome.count(False) == faulty.count(fault=Fault.UNAVAILABLE)
        return outcome

    first = await pattern(1)
    assert 30 <= first.count(False) <= 90  # about 30% of 200; the seed fixes the exact number
    assert await pattern(1) == first
    assert await pattern(2) != first


async def test_rates_can_target_some_operations(faulty: FaultyBackend) -> None:
    created = await faulty.create_stream(draft(1))
    faulty.set_rate(Fault.PERMANENT, 1.0, operations={"get_stream"})
    for _ in range(5):
        with pytest.raises(Conflict):
            await faulty.get_stream(created.id)
        assert (await faulty.list_streams(StreamQuery())).total_count == 1
    faulty.set_rate(Fault.PERMANENT, 0.0)
    assert await faulty.get_stream(created.id) == created


async def test_rate_limit_bursts_share_one_retry_at(faulty: FaultyBackend) -> None:
    faulty.set_rate(Fault.RATE_LIMITED, 1.0, operations={"create_stream"}, burst=3, retry_after=60)
    before = utc_now()
    with pytest.raises(RateLimited) as first:
        await faulty.create_stream(draft(1))
    faulty.set_rate(Fault.RATE_LIMITED, 0.0)  # no new bursts; the current one runs out
    retry_ats = [first.value.retry_at]
    for _ in range(2):  # the rest of the burst throttles any operation
        with pytest.raises(RateLimited) as more:
            await faulty.list_streams(StreamQuery())
        retry_ats.append(more.value.retry_at)
    assert len(set(retry_ats)) == 1
    retry_at = retry_ats[0]
    assert retry_at is not None
    assert before + timedelta(seconds=59) < retry_at <= utc_now() + timedelta(seconds=60)
    assert (await faulty.list_streams(StreamQuery())).total_count == 0  # burst over
    assert faulty.count(fault=Fault.RATE_LIMITED) == 3
    assert faulty.injected[("list_streams", Fault.RATE_LIMITED)] == 2


async def test_a_new_window_opens_after_retry_at_passes() -> None:
    faulty = FaultyBackend(load_backend("memory"), retry_after=0.05)
    faulty.script("list_streams", Fault.RATE_LIMITED, times=3)
    with pytest.raises(RateLimited) as a:
        await faulty.list_streams(StreamQuery())
    with pytest.raises(RateLimited) as b:
        await faulty.list_streams(StreamQuery())
    assert a.value.retry_at == b.value.retry_at
    await asyncio.sleep(0.06)
    with pytest.raises(RateLimited) as c:
        await faulty.list_streams(StreamQuery())
    assert a.value.retry_at is not None
    assert c.value.retry_at is not None
    assert c.value.retry_at > a.value.retry_at


async def test_down_switch_refuses_everything_but_close(faulty: FaultyBackend) -> None:
    created = await faulty.create_stream(draft(1))
    faulty.down = True
    calls = [
        faulty.get_stream(created.id),
        faulty.list_streams(StreamQuery()),
        faulty.create_stream(draft(2)),
        faulty.set_pinned(created.id, True),
        faulty.health(),
    ]
    for call in calls:
        with pytest.raises(Unavailable, match="down"):
            await call
    assert faulty.count(fault=Fault.DOWN) == 5
    await faulty.close()
    faulty.down = False
    assert (await faulty.get_stream(created.id)) == created
    assert (await faulty.list_streams(StreamQuery())).total_count == 1


async def test_fixed_latency_delays_calls(faulty: FaultyBackend) -> None:
    faulty.set_latency(fixed=0.03, operations={"create_stream"})
    loop = asyncio.get_running_loop()
    start = loop.time()
    await faulty.create_stream(draft(1))
    assert loop.time() - start >= 0.03
    await faulty.list_streams(StreamQuery())
    assert faulty.injected[("create_stream", Fault.LATENCY)] == 1
    assert faulty.count(operation="list_streams") == 0


async def test_jitter_and_spikes(faulty: FaultyBackend) -> None:
    faulty.set_latency(jitter=0.002, spike_rate=0.5, spike=0.01)
    for _ in range(20):
        await faulty.list_streams(StreamQuery())
    spikes = faulty.count(fault=Fault.SPIKE)
    assert 3 <= spikes <= 17  # about half; seeded
    assert faulty.count(fault=Fault.LATENCY) == 20
    faulty.set_latency()  # all zero: no latency
    await faulty.list_streams(StreamQuery())
    assert faulty.count(fault=Fault.LATENCY) == 20


async def test_latency_spike_is_felt(faulty: FaultyBackend) -> None:
    faulty.set_latency(spike_rate=1.0, spike=0.03)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await faulty.list_streams(StreamQuery())
    assert loop.time() - start >= 0.03
    assert faulty.count(fault=Fault.SPIKE) == 1


async def test_iteration_can_fail_midway(faulty: FaultyBackend) -> None:
    await asyncio.gather(*(faulty.create_stream(draft(i)) for i in range(250)))
    seen = 0

    async def walk() -> None:
        nonlocal seen
        async for _ in faulty.iter_streams():
            seen += 1
            if seen == 150:
                faulty.down = True  # the next page (from stream 201) is refused

    with pytest.raises(Unavailable):
        await walk()
    assert seen == 200
    assert faulty.calls["iter_streams"] == 3


async def test_heal_removes_every_fault_but_keeps_counters(faulty: FaultyBackend) -> None:
    faulty.script("list_streams", Fault.UNAVAILABLE, times=5)
    faulty.set_rate(Fault.PERMANENT, 1.0)
    faulty.set_latency(fixed=0.5)
    faulty.down = True
    with pytest.raises(Unavailable):
        await faulty.list_streams(StreamQuery())
    faulty.heal()
    assert (await faulty.list_streams(StreamQuery())).total_count == 0
    assert faulty.count() == 2  # one latency, one unavailable


def test_bad_configuration_is_refused(faulty: FaultyBackend) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        faulty.script("create_streams", Fault.UNAVAILABLE)
    with pytest.raises(ValueError, match="probability"):
        faulty.set_rate(Fault.UNAVAILABLE, 1.5)
    with pytest.raises(ValueError, match="have rates"):
        faulty.set_rate(Fault.LATENCY, 0.5)
    with pytest.raises(ValueError, match="burst"):
        faulty.set_rate(Fault.RATE_LIMITED, 0.5, burst=0)
    with pytest.raises(ValueError, match="latency"):
        faulty.set_latency(fixed=-1)
