"""The control API of a running emulator, shared by the Python handle and the admin endpoint.

Methods that change stored state (users, streams, flags) are coroutines, because with ``--db``
they write to SQLite; the others (faults, rate limit, quirks, counters) are plain methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from multibackend.model import utc_now
from multibackend_streamsource.emulator.auth import hash_password
from multibackend_streamsource.emulator.faults import FaultRule
from multibackend_streamsource.emulator.flags import SEEDED_DEFAULTS, FlagSetting
from multibackend_streamsource.emulator.records import ROLES, UserRecord
from multibackend_streamsource.emulator.serialize import stream_json, ts_ms
from multibackend_streamsource.emulator.state import Counters, EmulatorState

__all__ = ["EmulatorControl", "EmulatorUser"]


@attrs.frozen(kw_only=True)
class EmulatorUser:
    """A user account of the emulator (no password)."""

    id: int
    email: str
    role: str
    service_account: bool

    @classmethod
    def of(cls, record: UserRecord) -> EmulatorUser:
        return cls(
            id=record.id,
            email=record.email,
            role=record.role,
            service_account=record.service_account,
        )


def _role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


class EmulatorControl:
    """Changes an emulator's users, streams, flags, faults and limits while it runs."""

    def __init__(self, state: EmulatorState | None) -> None:
        self._current = state

    @property
    def _state(self) -> EmulatorState:
        if self._current is None:
            raise RuntimeError("the emulator is not started: use 'async with' or await start()")
        return self._current

    # --- users ---------------------------------------------------------------------------

    async def add_user(
        self,
        email: str,
        password: str,
        role: str = "editor",
        *,
        service_account: bool = False,
    ) -> EmulatorUser:
        """Create a user, or update the one with this email (email stripped and lower-cased,
        as the server stores it). Passwords are not checked against the signup rules."""
        store = self._state.store
        normalized = email.strip().lower()
        now = utc_now()
        existing = store.user_by_email(normalized)
        record = UserRecord(
            id=existing.id if existing is not None else store.next_user_id(),
            email=normalized,
            password_hash=hash_password(password),
            role=_role(role),
            service_account=service_account,
            created_at=existing.created_at if existing is not None else now,
            updated_at=now,
        )
        return EmulatorUser.of(await store.save_user(record))

    async def update_user(
        self,
        email: str,
        *,
        role: str | None = None,
        password: str | None = None,
        service_account: bool | None = None,
    ) -> EmulatorUser:
        """Change a user's role, password or service-account flag (KeyError if unknown).
        Tokens already issued keep working (their lifetime was fixed when issued)."""
        record = self._existing(email)
        changed = attrs.evolve(
            record,
            role=_role(role) if role is not None else record.role,
            password_hash=hash_password(password) if password is not None else record.password_hash,
            service_account=record.service_account if service_account is None else service_account,
            updated_at=utc_now(),
        )
        return EmulatorUser.of(await self._state.store.save_user(changed))

    async def remove_user(self, email: str) -> None:
        """Delete a user and their streams; their tokens answer 401 from then on."""
        await self._state.store.delete_user(self._existing(email).id)

    def user(self, email: str) -> EmulatorUser | None:
        record = self._state.store.user_by_email(email.strip().lower())
        return None if record is None else EmulatorUser.of(record)

    def users(self) -> list[EmulatorUser]:
        return [EmulatorUser.of(u) for u in self._state.store.users.values()]

    def token_for(self, email: str) -> str:
        """A valid token for a user, as a login would issue it (no request needed)."""
        record = self._existing(email)
        return self._state.tokens.issue(record.id, service_account=record.service_account)

    def _existing(self, email: str) -> UserRecord:
        record = self._state.store.user_by_email(email.strip().lower())
        if record is None:
            raise KeyError(f"no emulator user with email {email!r}")
        return record

    # --- flags ---------------------------------------------------------------------------

    async def set_flag(self, name: str, value: str | FlagSetting) -> None:
        """Turn a flag on for ``all``, ``editors``, ``admins`` (or ``editors,admins``), or
        ``off``. ValueError for an unknown flag or group."""
        setting = self._state.flags.set(name, value)
        persistence = self._state.store.persistence
        if persistence is not None:
            await persistence.save_setting(f"flag:{name}", setting.describe())

    async def set_flags(self, values: Mapping[str, str | FlagSetting]) -> None:
        for name, value in values.items():
            await self.set_flag(name, value)

    async def reset_flags(self) -> None:
        """Back to the server's seeded defaults."""
        await self.set_flags(SEEDED_DEFAULTS)

    def flags(self) -> dict[str, str]:
        return self._state.flags.describe()

    # --- faults, limits, quirks ----------------------------------------------------------

    def set_faults(
        self,
        *,
        latency: float | None = None,
        error_rate: float | None = None,
        error_statuses: Sequence[int] | None = None,
    ) -> None:
        """Latency in seconds added to every API answer; a rate (0..1) of answers replaced by
        a status drawn from ``error_statuses`` (default 500 and 503). None keeps a value."""
        self._state.faults.set(
            latency=latency, error_rate=error_rate, error_statuses=error_statuses
        )

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        method: str | None = None,
        path: str | None = None,
        after: bool = False,
        body: dict[str, Any] | None = None,
        disconnect: bool = False,
    ) -> None:
        """Answer the next ``count`` requests matching ``method``/``path`` with ``status``
        (``body`` instead of Rails' error body when given); ``after=True`` processes them first
        (the change happens, the answer is an error); ``disconnect=True`` closes the connection
        without answering. ``path`` is exact or a shell pattern (``/api/v1/streams/*``)."""
        self._state.faults.add(
            FaultRule(
                status=status,
                count=count,
                method=method,
                path=path,
                after=after,
                body=body,
                disconnect=disconnect,
            )
        )

    def clear_faults(self) -> None:
        self._state.faults.clear()

    def faults(self) -> dict[str, Any]:
        return self._state.faults.describe()

    def set_rate_limit(
        self, limit: int, period: float = 60.0, *, localhost_exempt: bool | None = None
    ) -> None:
        """``limit`` requests per ``period`` seconds per client IP (counting restarts)."""
        self._state.limiter.configure(limit, period, localhost_exempt=localhost_exempt)

    def set_signup_500(self, enabled: bool) -> None:
        """Whether a successful signup answers 500 like the real server (default True)."""
        self._state.signup_500 = enabled

    def set_ready(self, error: str | None = None) -> None:
        """Make ``/health/ready`` answer 503 with ``error`` (None: ready again)."""
        self._state.ready_error = error

    def add_known_city(self, city: str, state: str | None = None) -> None:
        """A known city for the ``location_validation`` flag."""
        self._state.known_cities.add(city, state)

    # --- streams -------------------------------------------------------------------------

    async def archive_stream(self, stream_id: int, archived: bool = True) -> None:
        """Archive (or unarchive) a stream, as the server's console/rake tasks do (the API
        cannot). Archiving sets ``ended_at`` when unset. KeyError for an unknown id."""
        stream = self._state.store.stream_copy(stream_id)
        if stream is None:
            raise KeyError(f"no stream {stream_id}")
        now = utc_now()
        stream.is_archived = archived
        if archived and stream.ended_at is None:
            stream.ended_at = stream.last_checked_at or now
        stream.updated_at = now
        await self._state.store.save_stream(stream)

    def stream(self, stream_id: int) -> dict[str, Any] | None:
        """A stream as an admin would read it, plus the hidden columns (is_archived,
        started_at, ended_at, location_id)."""
        record = self._state.store.streams.get(stream_id)
        if record is None:
            return None
        out = stream_json(
            record, self._state.store.users.get(record.user_id), analytics=False, tags=False
        )
        out.update(
            is_archived=record.is_archived,
            started_at=ts_ms(record.started_at),
            ended_at=ts_ms(record.ended_at),
            location_id=record.location_id,
        )
        return out

    def streams(self) -> list[dict[str, Any]]:
        """Every stream, in id order, as :meth:`stream` shows it."""
        return [s for s in (self.stream(i) for i in list(self._state.store.streams)) if s]

    # --- counters and reset --------------------------------------------------------------

    def counters(self) -> Counters:
        return self._state.counters()

    def reset_counters(self) -> None:
        self._state.reset_counters()

    async def reset(self) -> None:
        """Forget users, streams and revoked tokens; clear faults, known cities and counters;
        flags back to the seeded defaults; rate limiting counts afresh."""
        await self._state.store.clear()
        self._state.faults.clear()
        self._state.known_cities.clear()
        self._state.reset_counters()
        await self.reset_flags()
        limiter = self._state.limiter
        limiter.configure(limiter.limit, limiter.period)

    def describe(self) -> dict[str, Any]:
        """Everything switchable, for the admin endpoint."""
        limiter = self._state.limiter
        return {
            "flags": self.flags(),
            "faults": self.faults(),
            "rate_limit": {
                "limit": limiter.limit,
                "period": limiter.period,
                "localhost_exempt": limiter.localhost_exempt,
            },
            "signup_500": self._state.signup_500,
            "ready_error": self._state.ready_error,
            "users": [attrs.asdict(u) for u in self.users()],
            "stream_count": len(self._state.store.streams),
            "counters": attrs.asdict(self.counters()),
        }
