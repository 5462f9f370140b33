"""The client-side rate budget shared by every coroutine of one backend.

Two limits apply at once:

* **our budget** — at most ``limit`` requests in any ``window`` seconds. A slot is held from the
  moment a request is sent until ``window`` seconds after its answer arrived. Counting from the
  answer (not the send) guarantees that the server, which counts arrivals in fixed windows, never
  sees more than ``limit`` requests in one of its windows, whatever the latency;
* **the server's word** — ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` on any answer, and a
  429's reset time (or ``Retry-After``). While the server says we are out of requests, nobody
  sends: every caller waits for the reset, or raises :class:`RateLimited` at once when the reset
  is further away than the caller may wait. A throttled server is never hammered.

Waiters queue first-in first-out behind one gate, so a burst of callers costs one wake-up per
request rather than a stampede.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from multibackend.errors import RateLimited

__all__ = ["RateBudget", "parse_retry_at"]

log = logging.getLogger(__name__)

# Added to a server-announced reset: its clock and ours differ by a little, and the reset is
# given in whole seconds.
_RESET_MARGIN = 0.05
# Penalty waits when a 429 says nothing about when to come back: 1 s, 2 s, 4 s ... 60 s.
_BLIND_PENALTY_START = 1.0
_BLIND_PENALTY_MAX = 60.0


def parse_retry_at(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """When the server says to come back, as epoch seconds, from ``X-RateLimit-Reset`` (epoch
    seconds, the real server) or ``Retry-After`` (seconds or an HTTP date); None if neither."""
    wall = time.time() if now is None else now
    reset = headers.get("X-RateLimit-Reset")
    if reset is not None:
        try:
            value = float(reset)
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            # A small number is a delay (some servers), a large one an epoch timestamp.
            return value if value > 1e9 else wall + max(value, 0.0)
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        try:
            return wall + max(float(retry_after), 0.0)
        except ValueError:
            pass
        from email.utils import parsedate_to_datetime

        try:
            return parsedate_to_datetime(retry_after).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
    return None


class RateBudget:
    """At most ``limit`` requests per ``window`` seconds, and never against the server's word.

    Use ``acquire()`` before sending and ``release(headers)`` once the answer (or a failure)
    arrived; ``penalize(retry_at)`` after a 429.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        backend: str,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a rate budget needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._backend = backend
        self._clock = clock
        self._wall = wall_clock
        self._done: deque[float] = deque()  # answer times within the last window
        self._in_flight = 0
        self._gate = asyncio.Lock()
        self._released = asyncio.Event()
        # The server's word, on our monotonic clock.
        self._blocked_until = 0.0
        self._server_reset = 0.0
        self._server_remaining: int | None = None
        self._blind_penalty = _BLIND_PENALTY_START

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def blocked_for(self) -> float:
        """Seconds until the server lets us send again (0 when it does now)."""
        return max(0.0, self._blocked_until - self._clock())

    async def acquire(self, max_wait: float) -> None:
        """Wait for a slot. Raises RateLimited at once when the server's reset is more than
        ``max_wait`` seconds away (waiting on our own budget is always allowed)."""
        async with self._gate:
            while True:
                now = self._clock()
                while self._done and self._done[0] + self.window <= now:
                    self._done.popleft()
                server_wait = self._server_wait(now)
                if server_wait > 0:
                    if server_wait > max_wait:
                        retry_at = datetime.fromtimestamp(self._wall() + server_wait, UTC)
                        raise RateLimited(
                            f"the server throttled this client; it accepts requests again at "
                            f"{retry_at.isoformat(timespec='seconds')} "
                            f"(in {server_wait:.1f} s, more than max_rate_limit_wait "
                            f"{max_wait:g} s)",
                            retry_at=retry_at,
                            backend=self._backend,
                        )
                    log.debug("rate budget: waiting %.2f s for the server's reset", server_wait)
                    await asyncio.sleep(server_wait)
                    continue
                if self._in_flight + len(self._done) < self.limit:
                    self._in_flight += 1
                    if self._server_remaining is not None and now < self._server_reset:
                        self._server_remaining -= 1
                    return
                self._released.clear()
                if self._done:
                    delay = self._done[0] + self.window - now
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._released.wait(), timeout=delay)
                else:  # every slot is in flight: wait for an answer
                    await self._released.wait()

    def release(self, headers: Mapping[str, str] | None = None) -> None:
        """Give the slot back (its window starts now) and note the server's rate headers."""
        now = self._clock()
        self._in_flight -= 1
        self._done.append(now)
        if headers is not None:
            self._observe(headers, now)
        self._released.set()

    def penalize(self, retry_at: float | None) -> float:
        """After a 429: nobody sends before ``retry_at`` (epoch seconds); without one (or with
        one already past), back off 1, 2, 4 ... 60 s. Returns the seconds to wait from now."""
        now = self._clock()
        wait = -1.0 if retry_at is None else retry_at - self._wall()
        if wait <= 0:
            # No reset given, or one already past (clocks disagree): back off on our own,
            # longer each time, rather than come straight back.
            wait = self._blind_penalty
            self._blind_penalty = min(self._blind_penalty * 2, _BLIND_PENALTY_MAX)
        else:
            wait += _RESET_MARGIN
        self._blocked_until = max(self._blocked_until, now + wait)
        log.warning("rate limited by the server: pausing every request for %.2f s", wait)
        return self._blocked_until - now

    def _server_wait(self, now: float) -> float:
        if self._blocked_until > now:
            return self._blocked_until - now
        if (
            self._server_remaining is not None
            and now < self._server_reset
            and self._server_remaining <= 0
        ):
            return self._server_reset - now
        return 0.0

    def _observe(self, headers: Mapping[str, str], now: float) -> None:
        remaining_text = headers.get("X-RateLimit-Remaining")
        reset_text = headers.get("X-RateLimit-Reset")
        if remaining_text is None or reset_text is None:
            return
        try:
            remaining = int(remaining_text)
        except ValueError:
            return
        reset_epoch = parse_retry_at({"X-RateLimit-Reset": reset_text}, self._wall())
        if reset_epoch is None:
            return
        reset = now + max(0.0, reset_epoch - self._wall()) + _RESET_MARGIN
        if self._server_remaining is None or abs(reset - self._server_reset) > 0.5:
            # A new server window: its count is authoritative.
            self._server_remaining = remaining
            self._server_reset = reset
        else:
            # Same window: answers of requests we sent later may still be on their way, so keep
            # the lower of the server's count and ours.
            self._server_remaining = min(self._server_remaining, remaining)
        if remaining > 0:
            self._blind_penalty = _BLIND_PENALTY_START
