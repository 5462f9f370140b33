"""When to try a failed journal entry again, and when to stop trying a target for a while.

Pure functions of their inputs plus an injectable random source, so schedules are testable
without sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

__all__ = ["BreakerPolicy", "RetryPolicy"]


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped; entries past ``max_attempts`` are parked.

    The delay before attempt ``n + 1`` (after ``n`` failures) is drawn uniformly from
    ``[d/2, d]`` where ``d = min(cap, base * 2 ** (n - 1))`` ("equal jitter": never hammers,
    never waits longer than the cap, spreads retries of many entries apart).
    """

    max_attempts: int = 12
    base: float = 1.0
    cap: float = 300.0

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (``failures`` >= 1)."""
        ceiling = min(self.cap, self.base * 2.0 ** max(0, failures - 1))
        return float(ceiling / 2 + ceiling / 2 * rand())

    def exhausted(self, failures: int) -> bool:
        """True when an entry that has failed ``failures`` times must be parked."""
        return failures >= self.max_attempts


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    """Circuit breaker per target: after ``threshold`` consecutive retryable failures the target
    is paused for a cool-down that doubles with each further failure, up to ``cap`` seconds.
    A success closes the breaker."""

    threshold: int = 5
    cooldown: float = 5.0
    cap: float = 120.0

    def pause_for(self, consecutive_failures: int) -> float | None:
        """Seconds to pause the target, or None when it keeps flowing."""
        if consecutive_failures < self.threshold:
            return None
        return float(min(self.cap, self.cooldown * 2.0 ** (consecutive_failures - self.threshold)))
