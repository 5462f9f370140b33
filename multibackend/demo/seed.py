"""The demo's legacy database: the Node app's ``"Streams"`` table, as years of use left it.

The table is created with the legacy app's own DDL (contract §9.1, Sequelize on SQLite:
camelCase columns, booleans as 0/1, nullable ``isPinned`` without default, ``embedLink`` nobody
reads any more) and filled with plain batched INSERTs, as the legacy app would have written its
rows — not through multibackend, which is what the demo then migrates.

The rows look like real ones: platforms in the spellings different versions of the app wrote
(``Twitch``, ``twitch``, ``YouTube``, ``Youtube``, ``Kick``...), statuses ``Live``/``Offline``/
``Unknown``, cities and regions (some missing, a few padded with spaces), some pinned, some with
``isPinned`` NULL (rows written before the column existed), a few expired (soft-deleted: the
backend hides them, so they are not migrated), timestamps spread over most of a year in
Sequelize's SQLite spelling (``2025-03-04 05:06:07.891 +00:00``). The generator is seeded:
the same ``count`` and ``seed`` give the same rows.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import attrs

__all__ = ["LEGACY_DDL", "SeedResult", "seed_legacy"]

LEGACY_DDL: Final = """
CREATE TABLE "Streams" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "source" TEXT,
    "platform" TEXT,
    "link" TEXT NOT NULL,
    "status" TEXT DEFAULT 'Unknown',
    "title" TEXT,
    "isExpired" BOOLEAN DEFAULT 0,
    "checkedAt" DATETIME,
    "liveAt" DATETIME,
    "embedLink" TEXT,
    "postedBy" TEXT,
    "isPinned" BOOLEAN,
    "city" TEXT,
    "region" TEXT,
    "createdAt" DATETIME NOT NULL,
    "updatedAt" DATETIME NOT NULL
);
CREATE INDEX "streams_is_pinned" ON "Streams" ("isPinned");
"""

_COLUMNS: Final = (
    "source",
    "platform",
    "link",
    "status",
    "title",
    "isExpired",
    "checkedAt",
    "liveAt",
    "embedLink",
    "postedBy",
    "isPinned",
    "city",
    "region",
    "createdAt",
    "updatedAt",
)

# (stored spelling, weight, link pattern). The app's free-text column saw every spelling.
_PLATFORMS: Final = (
    ("Twitch", 20, "https://www.twitch.tv/{handle}"),
    ("twitch", 6, "https://twitch.tv/{handle}"),
    ("TikTok", 14, "https://www.tiktok.com/@{handle}/live"),
    ("tiktok", 4, "https://tiktok.com/@{handle}/live"),
    ("YouTube", 14, "https://www.youtube.com/@{handle}/live"),
    ("Youtube", 4, "https://youtube.com/@{handle}/live"),
    ("Instagram", 8, "https://www.instagram.com/{handle}/live"),
    ("Facebook", 6, "https://www.facebook.com/{handle}/live"),
    ("Kick", 3, "https://kick.com/{handle}"),
    (None, 4, "https://stream.example.net/{handle}"),
)

_PLACES: Final = (
    ("Portland", "OR"),
    ("Seattle", "WA"),
    ("Minneapolis", "MN"),
    ("Chicago", "IL"),
    ("New York", "NY"),
    ("Atlanta", "GA"),
    ("Los Angeles", "CA"),
    ("Oakland", "CA"),
    ("Austin", "TX"),
    ("Houston", "TX"),
    ("Denver", "CO"),
    ("Philadelphia", "PA"),
    ("Louisville", "KY"),
    ("Kenosha", "WI"),
    ("Washington", "DC"),
    ("Richmond", "VA"),
)

_HANDLE_PARTS: Final = (
    ("unicorn", "street", "night", "bike", "river", "north", "urban", "live", "peoples", "field"),
    ("riot", "watch", "medic", "cam", "press", "report", "eye", "walker", "feed", "wire"),
)
_TITLE_PARTS: Final = (
    ("Downtown", "Evening", "Late night", "Weekend", "Bridge", "City hall", "Courthouse", "Park"),
    ("march", "rally", "vigil", "livestream", "coverage", "walk", "update", "gathering"),
)
_STATUSES: Final = (("Live", 15), ("Offline", 60), ("Unknown", 25))

#: Where the history starts: streams were added over the ``_SPAN`` that followed.
_START: Final = datetime(2025, 1, 6, 8, 0, 0, tzinfo=UTC)
_SPAN: Final = timedelta(days=300)


@attrs.frozen(kw_only=True)
class SeedResult:
    """What was written: ``rows`` in the table, of which ``expired`` are soft-deleted (hidden
    by the backend, so ``visible`` streams are the ones a migration copies)."""

    path: Path
    rows: int
    expired: int
    pinned: int
    null_pinned: int
    elapsed: float

    @property
    def visible(self) -> int:
        return self.rows - self.expired


def _sequelize_time(value: datetime) -> str:
    """Sequelize's SQLite spelling of a timestamp (milliseconds and an explicit offset)."""
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d} +00:00"


def _rows(count: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    platforms = [p for p in _PLATFORMS for _ in range(p[1])]
    statuses = [s for s, weight in _STATUSES for _ in range(weight)]
    for i in range(count):
        spelling, _, pattern = rng.choice(platforms)
        handle = f"{rng.choice(_HANDLE_PARTS[0])}{rng.choice(_HANDLE_PARTS[1])}{i}"
        created = _START + _SPAN * (i / max(count, 1)) + timedelta(seconds=rng.randrange(3600))
        updated = created + timedelta(minutes=rng.randrange(0, 60 * 24 * 20))
        status = rng.choice(statuses)
        live_at = None
        if status == "Live" or rng.random() < 0.5:
            live_at = created + timedelta(minutes=rng.randrange(0, 60 * 24 * 10))
        checked_at = updated if rng.random() < 0.8 else None
        city: str | None = None
        region: str | None = None
        if rng.random() < 0.75:
            city, region = rng.choice(_PLACES)
            if rng.random() < 0.03:
                city = f" {city} "  # typed with stray spaces; never cleaned up
            if rng.random() < 0.1:
                region = None
        pin_roll = rng.random()
        # isPinned came in a later migration: old rows have NULL.
        pinned: int | None = 1 if pin_roll < 0.04 else (None if pin_roll < 0.25 else 0)
        title = None
        if rng.random() < 0.85:
            title = f"{rng.choice(_TITLE_PARTS[0])} {rng.choice(_TITLE_PARTS[1])}"
        yield (
            handle,
            spelling,
            pattern.format(handle=handle),
            status,
            title,
            1 if rng.random() < 0.02 else 0,
            _sequelize_time(checked_at) if checked_at else None,
            _sequelize_time(live_at) if live_at else None,
            None,
            rng.choice((None, None, "moderator1", "moderator2", "tipline")),
            pinned,
            city,
            region,
            _sequelize_time(created),
            _sequelize_time(updated),
        )


def seed_legacy(path: Path, count: int, *, seed: int = 2020, batch: int = 1000) -> SeedResult:
    """Create ``path`` (removed first if it exists) with the legacy table and ``count`` rows,
    ``batch`` rows per INSERT transaction. Blocking: call it in a thread from async code."""
    import time

    started = time.monotonic()
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rng = random.Random(seed)
    marks = ", ".join("?" * len(_COLUMNS))
    columns = ", ".join(f'"{c}"' for c in _COLUMNS)
    sql = f'INSERT INTO "Streams" ({columns}) VALUES ({marks})'
    db = sqlite3.connect(path)
    try:
        db.executescript(LEGACY_DDL)
        chunk: list[tuple[Any, ...]] = []
        for row in _rows(count, rng):
            chunk.append(row)
            if len(chunk) >= batch:
                with db:
                    db.executemany(sql, chunk)
                chunk = []
        if chunk:
            with db:
                db.executemany(sql, chunk)
        expired, pinned, null_pinned = db.execute(
            'SELECT SUM("isExpired"), SUM("isPinned" = 1 AND "isExpired" = 0),'
            ' SUM("isPinned" IS NULL) FROM "Streams"'
        ).fetchone()
    finally:
        db.close()
    return SeedResult(
        path=path,
        rows=count,
        expired=int(expired or 0),
        pinned=int(pinned or 0),
        null_pinned=int(null_pinned or 0),
        elapsed=time.monotonic() - started,
    )
