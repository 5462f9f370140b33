"""The emulator's rows: users, streams, and the enum spellings the server stores.

Records are mutable attrs classes owned by the :class:`~.store.Store`; handlers work on copies
(``attrs.evolve``) and hand the result back to the store, so a failed validation never leaves a
half-changed row behind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import attrs

#: Enum columns: API key -> value stored in the database (contract §2). Input accepts either.
ENUMS: Final[dict[str, dict[str, str]]] = {
    "status": {"live": "Live", "offline": "Offline", "unknown": "Unknown"},
    "platform": {
        "tiktok": "TikTok",
        "facebook": "Facebook",
        "twitch": "Twitch",
        "youtube": "YouTube",
        "instagram": "Instagram",
        "other": "Other",
    },
    "orientation": {"vertical": "vertical", "horizontal": "horizontal"},
    "kind": {"video": "video", "web": "web", "overlay": "overlay", "background": "background"},
}

#: Either spelling -> API key, per enum column.
ENUM_LOOKUP: Final[dict[str, dict[str, str]]] = {
    column: {**{k: k for k in mapping}, **{v: k for k, v in mapping.items()}}
    for column, mapping in ENUMS.items()
}

ROLES: Final = ("default", "editor", "admin")


@attrs.define(kw_only=True)
class UserRecord:
    """A user account. ``password_hash`` is a salted PBKDF2 digest, never the password."""

    id: int
    email: str
    password_hash: str
    role: str = "default"
    service_account: bool = False
    created_at: datetime
    updated_at: datetime


@attrs.define(kw_only=True)
class StreamRecord:
    """A stream row. Enum columns hold the API key (``live``), not the stored spelling."""

    id: int
    user_id: int
    source: str | None = None
    link: str | None = None
    status: str | None = "unknown"
    platform: str | None = None
    orientation: str | None = None
    kind: str | None = "video"
    city: str | None = None
    state: str | None = None
    notes: str | None = None
    title: str | None = None
    posted_by: str | None = None
    location_id: int | None = None
    is_pinned: bool = False
    is_archived: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    last_checked_at: datetime | None = None
    last_live_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


#: Columns a client writes through create/update, in the order the server permits them.
PERMITTED_STREAM_KEYS: Final = (
    "source",
    "link",
    "status",
    "platform",
    "orientation",
    "kind",
    "city",
    "state",
    "notes",
    "title",
    "posted_by",
    "location_id",
)

#: Bulk import items permit the same keys minus ``location_id`` (contract §6).
PERMITTED_BULK_KEYS: Final = PERMITTED_STREAM_KEYS[:-1]

#: Columns compared to decide whether an update changed anything (and so bumps updated_at).
CONTENT_COLUMNS: Final = (
    *PERMITTED_STREAM_KEYS,
    "is_pinned",
    "is_archived",
    "started_at",
    "ended_at",
    "last_checked_at",
    "last_live_at",
)
