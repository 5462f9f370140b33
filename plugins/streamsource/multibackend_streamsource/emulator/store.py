"""The emulator's state: users, streams and revoked tokens, in memory, optionally persisted.

Ids come from sequences that never reuse a value, like PostgreSQL's. Writes go through the
async methods so that, with ``--db``, the change is committed to SQLite before it is answered.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from multibackend_streamsource.emulator.records import StreamRecord, UserRecord
from multibackend_streamsource.emulator.sqlite import SqlitePersistence

__all__ = ["Store"]


class Store:
    """Rows by id, plus an email index for users."""

    def __init__(self, persistence: SqlitePersistence | None = None) -> None:
        self.persistence = persistence
        self.users: dict[int, UserRecord] = {}
        self._by_email: dict[str, UserRecord] = {}
        self.streams: dict[int, StreamRecord] = {}
        self.denylist: set[str] = set()
        self._next_user = 1
        self._next_stream = 1

    def load(
        self, users: list[UserRecord], streams: list[StreamRecord], denylist: set[str]
    ) -> None:
        """Replace the state with rows loaded from persistence."""
        self.users = {u.id: u for u in users}
        self._by_email = {u.email: u for u in users}
        self.streams = {s.id: s for s in streams}
        self.denylist = set(denylist)
        self._next_user = max(self.users, default=0) + 1
        self._next_stream = max(self.streams, default=0) + 1

    # --- users ---------------------------------------------------------------------------

    def user_by_email(self, email: str) -> UserRecord | None:
        """Exact lookup, as the server's ``find_by(email:)``."""
        return self._by_email.get(email)

    def next_user_id(self) -> int:
        value = self._next_user
        self._next_user += 1
        return value

    async def save_user(self, user: UserRecord) -> UserRecord:
        """Insert or replace ``user`` (by id)."""
        old = self.users.get(user.id)
        if old is not None and old.email != user.email:
            self._by_email.pop(old.email, None)
        self.users[user.id] = user
        self._by_email[user.email] = user
        if self.persistence is not None:
            await self.persistence.save_user(user)
        return user

    async def delete_user(self, user_id: int) -> None:
        """Delete a user and the streams they own (``dependent: :destroy``)."""
        user = self.users.pop(user_id, None)
        if user is None:
            return
        self._by_email.pop(user.email, None)
        for sid in [s.id for s in self.streams.values() if s.user_id == user_id]:
            del self.streams[sid]
        if self.persistence is not None:
            await self.persistence.delete_user(user_id)

    # --- streams -------------------------------------------------------------------------

    def next_stream_id(self) -> int:
        value = self._next_stream
        self._next_stream += 1
        return value

    def iter_streams(self) -> Iterator[StreamRecord]:
        return iter(self.streams.values())

    def stream_copy(self, stream_id: int) -> StreamRecord | None:
        """A copy of the stream to change and save back, or None."""
        stream = self.streams.get(stream_id)
        return None if stream is None else attrs.evolve(stream)

    async def save_stream(self, stream: StreamRecord) -> StreamRecord:
        """Insert or replace ``stream`` (by id)."""
        self.streams[stream.id] = stream
        if self.persistence is not None:
            await self.persistence.save_stream(stream)
        return stream

    async def delete_stream(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        if self.persistence is not None:
            await self.persistence.delete_stream(stream_id)

    # --- tokens --------------------------------------------------------------------------

    async def revoke(self, jti: str) -> None:
        """Add a token id to the denylist."""
        self.denylist.add(jti)
        if self.persistence is not None:
            await self.persistence.revoke(jti)

    async def clear(self) -> None:
        """Forget every user, stream and revoked token (ids keep counting up)."""
        self.users.clear()
        self._by_email.clear()
        self.streams.clear()
        self.denylist.clear()
        if self.persistence is not None:
            await self.persistence.clear()
