"""Entity keys: the library's own identity of an entity across every backend.

A key is 32 lowercase hex characters (the shape of ``uuid4().hex``, which the manager used
before): 14 of them the time in microseconds since the epoch, then 18 random ones (72 bits).

Why time first: keys are the leading column of the id map's primary key and of the queue's
(entity, target) index. Random keys put each of a batch's rows on a page of its own, so every
worker commit rewrote about one index page per row (~300 pages, 1.25 MB of WAL per batch of
200 creates on SQLite; the same churn in PostgreSQL's indexes and WAL). Keys minted close in
time sort close together, so a batch touches a few pages at the index's right edge.

Uniqueness does not rest on the clock: 72 random bits keep keys minted in the same microsecond
apart, in one process or in many (about 2**36 keys in one microsecond before a collision is
likely). A clock stepping back only makes keys land less close together. Nothing orders by
key: the time prefix is for locality only, never read back as a time.
"""

from __future__ import annotations

import os
import time

__all__ = ["KEY_LENGTH", "new_entity_key", "new_entity_keys"]

#: Characters in an entity key.
KEY_LENGTH = 32

_RANDOM_BYTES = 9  # 18 hex characters after the 14 of the time


def new_entity_key() -> str:
    """A fresh entity key (see the module docstring)."""
    return f"{time.time_ns() // 1000:014x}{os.urandom(_RANDOM_BYTES).hex()}"


def new_entity_keys(count: int) -> list[str]:
    """``count`` fresh entity keys sharing one time prefix (one clock read, one random read)."""
    prefix = f"{time.time_ns() // 1000:014x}"
    noise = os.urandom(_RANDOM_BYTES * count).hex()
    step = 2 * _RANDOM_BYTES
    return [prefix + noise[i * step : (i + 1) * step] for i in range(count)]
