"""Rate limiting as Rack::Attack does it on the server (contract §5).

One throttle: ``limit`` requests per ``period`` seconds per client IP, in fixed windows aligned to
the epoch; the (limit+1)-th request inside a window is refused, and refused requests count too.
The real server never throttles 127.0.0.1 and ::1; the emulator does unless ``localhost_exempt``,
so that clients can be tested against it.
"""

from __future__ import annotations

import math
import time
from typing import Final

import attrs

__all__ = ["RateLimiter", "Throttled"]

_LOCALHOST: Final = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


@attrs.frozen
class Throttled:
    """A refused request: the limit and the epoch second the window ends."""

    limit: int
    reset: int


class RateLimiter:
    """Fixed-window request counter per client IP."""

    def __init__(self, limit: int = 1000, period: float = 60.0, *, localhost_exempt: bool = False):
        self.configure(limit, period, localhost_exempt=localhost_exempt)

    def configure(self, limit: int, period: float, *, localhost_exempt: bool | None = None) -> None:
        """Change the limit and window (counting restarts); ``None`` keeps the exemption."""
        if limit < 0:
            raise ValueError(f"rate limit must be >= 0 (got {limit})")
        if not period > 0:
            raise ValueError(f"rate limit period must be > 0 seconds (got {period})")
        self.limit = limit
        self.period = float(period)
        if localhost_exempt is not None:
            self.localhost_exempt = localhost_exempt
        self._windows: dict[str, tuple[int, int]] = {}

    def hit(self, ip: str | None, now: float | None = None) -> Throttled | None:
        """Count a request from ``ip``; return Throttled when it is over the limit."""
        key = ip or ""
        if self.localhost_exempt and key in _LOCALHOST:
            return None
        at = time.time() if now is None else now
        window = math.floor(at / self.period)
        current = self._windows.get(key)
        count = current[1] + 1 if current is not None and current[0] == window else 1
        if len(self._windows) > 10000 and current is None:
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        self._windows[key] = (window, count)
        if count > self.limit:
            return Throttled(self.limit, math.ceil((window + 1) * self.period))
        return None
