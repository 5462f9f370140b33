"""Progress reporting for long migration runs: a bar on a terminal, plain lines otherwise.

On a terminal one line is redrawn in place: ``backfill  12,345/100,000 [====>    ] 4,210/s
ETA 21s``. When the output is not a terminal (a log file, CI) a plain line is written every
``interval`` seconds instead. ``total`` may be unknown (None): then no bar and no ETA.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Counts work done and reports it. ``enabled=False`` makes every call a no-op."""

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        stream: TextIO | None = None,
        interval: float = 5.0,
        enabled: bool = True,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._last = float("-inf")  # the first advance draws at once

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if not self.enabled:
            return
        if now - self._last >= (0.2 if self.tty else self.interval):
            self._last = now
            self._draw()

    def _draw(self) -> None:
        rate = self.rate
        eta = ""
        if self.total is not None and rate > 0:
            eta = f" ETA {max(0.0, (self.total - self.done) / rate):.0f}s"
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total is not None else "")
        if self.tty:
            bar = ""
            if self.total:
                width = 24
                filled = min(width, int(width * self.done / self.total))
                bar = " [" + "=" * filled + " " * (width - filled) + "]"
            self.stream.write(f"\r{self.label} {count}{bar} {rate:,.0f}/s{eta}   ")
        else:
            self.stream.write(f"{self.label}: {count} done, {rate:,.0f}/s{eta}\n")
        self.stream.flush()

    def finish(self) -> None:
        """Draw the final state (and end the redrawn line on a terminal)."""
        if not self.enabled:
            return
        self._draw()
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
