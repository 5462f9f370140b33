"""Rate limits over real HTTP: the client's budget keeps an emulator with the same budget from
ever answering 429; a 429 is waited out when the reset is near and raised when it is far; a
throttled server is not hammered."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
from multibackend_streamsource.backend import StreamSourceBackend

from multibackend.errors import RateLimited
from multibackend.model import StreamDraft


def draft(n: int) -> StreamDraft:
    return StreamDraft(source=f"s{n}", link=f"https://example.com/{n}")


async def start_of_window(period: float, need: float) -> None:
    """Sleep into a fresh epoch-aligned window when fewer than ``need`` seconds remain."""
    left = period - (time.time() % period)
    if left < need:
        await asyncio.sleep(left + 0.05)


@pytest.mark.slow
async def test_budget_holds_under_200_concurrent_calls(emulator: Any, make_options: Any) -> None:
    """Emulator and client share the budget 50 requests / 2 s: 200 concurrent calls (plus the
    login) finish without a single 429, and no faster than the budget allows."""
    emulator.set_rate_limit(50, 2.0)
    opts = make_options(emulator.base_url, rate_limit_requests=50, rate_limit_window=2.0)
    emulator.reset_counters()
    started = time.monotonic()
    async with StreamSourceBackend("ss", opts) as backend:
        created = await asyncio.gather(*(backend.create_stream(draft(i)) for i in range(200)))
    elapsed = time.monotonic() - started
    counters = emulator.counters()
    assert counters.throttled == 0
    assert counters.requests == 201
    assert len({s.id for s in created}) == 200
    # 201 requests at 50 per 2 s cannot take less than four full windows' wait.
    assert elapsed >= 2.0 * (math.ceil(201 / 50) - 1) - 0.1


async def test_429_is_waited_out_when_the_reset_is_near(emulator: Any, make_options: Any) -> None:
    """The server allows 4 requests per 2 s, the client believes in 1000/min: it meets a 429,
    pauses every call until the reset, and goes on; each throttled call was sent only once."""
    emulator.set_rate_limit(4, 2.0)
    opts = make_options(emulator.base_url, max_rate_limit_wait=5.0)
    await start_of_window(2.0, 1.5)
    emulator.reset_counters()
    async with StreamSourceBackend("ss", opts) as backend:
        first = await backend.create_stream(draft(0))  # login + create: 2 of 4
        got = await asyncio.gather(*(backend.get_stream(first.id) for _ in range(6)))
    assert {g.id for g in got} == {first.id}
    counters = emulator.counters()
    # Two reads fit in the first window; the other four were refused once each (they were in
    # flight together) and then waited for the reset instead of retrying at once.
    assert counters.throttled <= 4
    assert counters.requests == 2 + 6 + counters.throttled


async def test_429_with_a_far_reset_raises_and_stops_sending(
    emulator: Any, make_options: Any
) -> None:
    emulator.set_rate_limit(3, 60.0)
    opts = make_options(emulator.base_url, max_rate_limit_wait=0.5)
    await start_of_window(60.0, 5.0)
    emulator.reset_counters()
    async with StreamSourceBackend("ss", opts) as backend:
        s = await backend.create_stream(draft(0))
        await backend.get_stream(s.id)  # the third request of the window
        before = time.time()
        with pytest.raises(RateLimited) as caught:
            await backend.get_stream(s.id)
        retry_at = caught.value.retry_at
        assert retry_at is not None
        assert before < retry_at.timestamp() <= before + 61
        assert caught.value.retryable
        sent = emulator.counters().requests
        with pytest.raises(RateLimited):
            await backend.get_stream(s.id)
        assert emulator.counters().requests == sent  # not sent: the server said when
    assert emulator.counters().throttled == 1
