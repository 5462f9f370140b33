"""The authenticator and the rate budget on their own (no HTTP): what a caller would notice are
the number of logins, the errors, and when requests are let through."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from multibackend_streamsource.auth import Authenticator
from multibackend_streamsource.ratelimit import RateBudget, parse_retry_at

from multibackend.errors import AuthenticationFailed, RateLimited


class CountingLogin:
    def __init__(self, make_token: Any, delay: float = 0.02) -> None:
        self.calls = 0
        self.make_token = make_token
        self.delay = delay

    async def __call__(self) -> str:
        self.calls += 1
        await asyncio.sleep(self.delay)  # other coroutines pile up meanwhile
        return str(self.make_token(lifetime=3600))


async def test_single_flight_login_for_100_concurrent_callers(token_factory: Any) -> None:
    expired = token_factory(lifetime=-10)
    login = CountingLogin(token_factory)
    auth = Authenticator(backend="ss", token=expired, refresh_margin=60, login=login)
    tokens = await asyncio.gather(*(auth.bearer() for _ in range(100)))
    assert login.calls == 1
    assert len(set(tokens)) == 1
    assert tokens[0] != expired


async def test_logs_in_again_refresh_margin_before_exp(token_factory: Any) -> None:
    now = int(time.time())
    # Issued an hour ago, expires in 100 s: inside a 300 s margin.
    soon = token_factory(iat=now - 3600, lifetime=100)
    login = CountingLogin(token_factory, delay=0)
    auth = Authenticator(backend="ss", token=soon, refresh_margin=300, login=login)
    assert await auth.bearer() != soon
    assert login.calls == 1
    # Fresh token (an hour left): no further login.
    await auth.bearer()
    assert login.calls == 1
    # Outside the margin the configured token is used as it is.
    later = token_factory(iat=now - 60, lifetime=3000)
    auth2 = Authenticator(backend="ss", token=later, refresh_margin=300, login=login)
    assert await auth2.bearer() == later


async def test_token_only_mode_expiry_is_a_clear_error(token_factory: Any) -> None:
    expired = token_factory(lifetime=-5)
    auth = Authenticator(backend="ss", token=expired, refresh_margin=300, login=None)
    with pytest.raises(AuthenticationFailed, match="configured token expired at") as caught:
        await auth.bearer()
    assert "no email/password" in str(caught.value)
    assert expired not in str(caught.value)
    # Token-only mode uses the token to its end, ignoring the margin (nobody can refresh it).
    short = token_factory(lifetime=30)
    assert await Authenticator(backend="ss", token=short, refresh_margin=300, login=None).bearer()


async def test_invalidate_ignores_a_token_already_replaced(token_factory: Any) -> None:
    login = CountingLogin(token_factory, delay=0)
    auth = Authenticator(backend="ss", token=None, refresh_margin=10, login=login)
    first = await auth.bearer()
    auth.invalidate(first)
    second = await auth.bearer()
    auth.invalidate(first)  # a late 401 for the old token must not throw the new one away
    assert await auth.bearer() == second
    assert login.calls == 2


async def test_budget_lets_at_most_limit_requests_per_window() -> None:
    budget = RateBudget(10, 0.4, backend="ss")
    sent: list[float] = []

    async def one() -> None:
        await budget.acquire(max_wait=5)
        sent.append(time.monotonic())
        await asyncio.sleep(0.01)
        budget.release({})

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(30)))
    elapsed = time.monotonic() - started
    assert elapsed >= 0.8  # three windows' worth of requests
    assert elapsed < 2.0  # and not much slower than allowed
    sent.sort()
    for i in range(len(sent) - 10):
        assert sent[i + 10] - sent[i] >= 0.4


async def test_server_headers_block_until_reset() -> None:
    budget = RateBudget(1000, 60, backend="ss")
    await budget.acquire(max_wait=5)
    reset = str(int(time.time()) + 1)
    budget.release({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset})
    started = time.monotonic()
    await budget.acquire(max_wait=5)
    waited = time.monotonic() - started
    budget.release({})
    assert waited >= float(reset) - time.time() - 1.1
    assert waited > 0


async def test_penalty_beyond_max_wait_raises_without_waiting() -> None:
    budget = RateBudget(1000, 60, backend="ss")
    budget.penalize(time.time() + 30)
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        await budget.acquire(max_wait=5)
    assert time.monotonic() - started < 0.1
    assert caught.value.retry_at is not None
    assert caught.value.retryable


def test_parse_retry_at() -> None:
    now = 1_700_000_000.0
    assert parse_retry_at({"X-RateLimit-Reset": "1700000060"}, now) == 1_700_000_060
    assert parse_retry_at({"Retry-After": "7"}, now) == now + 7
    assert parse_retry_at({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now) == 1445412480
    assert parse_retry_at({}, now) is None
    assert parse_retry_at({"Retry-After": "soon"}, now) is None


async def test_penalty_without_a_usable_reset_escalates() -> None:
    budget = RateBudget(1000, 60, backend="ss")
    first = budget.penalize(None)
    second = budget.penalize(time.time() - 10)  # a reset in the past: clocks disagree
    assert first >= 1.0
    assert second >= 2.0  # longer each time: a throttled server is not hammered
    with pytest.raises(RateLimited):
        await budget.acquire(max_wait=0.5)


def test_retry_backoff_is_jittered_and_bounded() -> None:
    from multibackend_streamsource.client import RetryPolicy

    policy = RetryPolicy(max_retries=8, backoff=0.5, max_backoff=4.0)
    for attempt in range(8):
        cap = min(4.0, 0.5 * 2**attempt)
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(delays) > 1  # jittered: concurrent retries do not arrive together
