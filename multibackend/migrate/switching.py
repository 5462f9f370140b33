"""A shorter GIL switch interval for the length of a job whose threads hand work to each other.

A backfill on SQLite has two threads doing its work: the event loop's thread (reading the
source, drafts, the copies) and aiosqlite's thread (each chunk's journal transaction). SQLite's
own work there runs without the GIL, so on a machine with two cores the two could overlap. But
the sqlite3 module lets go of the GIL around every statement's step, and a thread that wants it
back while the other runs Python waits until the interpreter's switch interval (5 ms by default)
runs out. A chunk's transaction takes about seven such waits: 9 ms of work took 41 ms beside a
busy thread, and the chunks' transactions, one after the other, set the backfill's pace. With
a 1 ms interval a 100,000-row backfill reached 0.57-0.60 of a raw read-then-write loop, against
0.54-0.57 without, for the same CPU time (docs/benchmarks.md, "Backfill (backfill6)").

:func:`shorter_switch_interval` lowers :func:`sys.setswitchinterval` for the length of a
``with`` block and puts the old value back after it. The interval is process-wide: while the
block runs, every thread of the process is switched more often (fairer, at a small cost in
throughput for CPU-bound threads); nothing else changes. Blocks may nest or overlap (several
backfills at once): the first one in saves the old value, the last one out restores it, unless
someone else set another value meanwhile (theirs is kept).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

__all__ = ["shorter_switch_interval"]

_lock = threading.Lock()
_holders = 0
_saved: float | None = None
_ours: float | None = None


@contextlib.contextmanager
def shorter_switch_interval(seconds: float | None) -> Iterator[None]:
    """Run the block with the interpreter's switch interval at most ``seconds`` (None, or a
    value not below the current interval: change nothing). Raises ValueError for a
    ``seconds`` that is not positive."""
    if seconds is not None and not seconds > 0:
        raise ValueError("switch interval must be greater than 0")
    global _holders, _saved, _ours
    with _lock:
        entered = seconds is not None and (_holders > 0 or sys.getswitchinterval() > seconds)
        if entered:
            assert seconds is not None
            if _holders == 0:
                _saved = sys.getswitchinterval()
                _ours = None
            if _ours is None or seconds < _ours:
                sys.setswitchinterval(seconds)
                # What the interpreter stores (it rounds to microseconds).
                _ours = sys.getswitchinterval()
            _holders += 1
    try:
        yield
    finally:
        if entered:
            with _lock:
                _holders -= 1
                if _holders == 0:
                    if _saved is not None and sys.getswitchinterval() == _ours:
                        sys.setswitchinterval(_saved)
                    _saved = _ours = None
