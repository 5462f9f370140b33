"""Everything a running emulator knows, shared by its request handlers and its control API."""

from __future__ import annotations

from collections import Counter
from typing import Final

import attrs
from aiohttp import web

from multibackend_streamsource.emulator.auth import TokenError, TokenService, token_from_header
from multibackend_streamsource.emulator.faults import Faults
from multibackend_streamsource.emulator.flags import Flags
from multibackend_streamsource.emulator.params import ruby_to_i
from multibackend_streamsource.emulator.ratelimit import RateLimiter
from multibackend_streamsource.emulator.records import StreamRecord, UserRecord
from multibackend_streamsource.emulator.responses import MAINTENANCE, UNAUTHORIZED, ApiError
from multibackend_streamsource.emulator.rules import KnownCities
from multibackend_streamsource.emulator.serialize import stream_json
from multibackend_streamsource.emulator.store import Store

__all__ = ["STATE", "Counters", "EmulatorState"]


@attrs.frozen(kw_only=True)
class Counters:
    """What the emulator has answered since it started (or since counters were reset).

    ``requests`` counts API requests (not the control endpoints); ``throttled`` the 429s sent;
    ``faults`` the injected failures; ``errors`` the unexpected exceptions (emulator bugs: a
    healthy run has 0); ``statuses`` the answers by status code.
    """

    requests: int = 0
    throttled: int = 0
    faults: int = 0
    errors: int = 0
    statuses: dict[int, int] = attrs.field(factory=dict)


class EmulatorState:
    """The store plus the switchable behaviour: flags, faults, limits and quirks."""

    def __init__(
        self,
        *,
        store: Store,
        tokens: TokenService,
        flags: Flags,
        limiter: RateLimiter,
        faults: Faults,
        signup_500: bool = True,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.flags = flags
        self.limiter = limiter
        self.faults = faults
        self.signup_500 = signup_500
        self.known_cities = KnownCities()
        self.ready_error: str | None = None
        self.requests = 0
        self.throttled = 0
        self.fault_count = 0
        self.errors = 0
        self.statuses: Counter[int] = Counter()

    def counters(self) -> Counters:
        return Counters(
            requests=self.requests,
            throttled=self.throttled,
            faults=self.fault_count,
            errors=self.errors,
            statuses=dict(self.statuses),
        )

    def reset_counters(self) -> None:
        self.requests = self.throttled = self.fault_count = self.errors = 0
        self.statuses.clear()

    # --- the request pipeline's shared steps -------------------------------------------

    def authenticate(self, request: web.Request) -> UserRecord:
        """The user the request's token names, or ApiError 401 (contract §4)."""
        token = token_from_header(request.headers.get("Authorization"))
        if token is None:
            raise ApiError(401, UNAUTHORIZED)
        try:
            claims = self.tokens.decode(token)
        except TokenError:
            raise ApiError(401, UNAUTHORIZED) from None
        jti = claims.get("jti")
        if isinstance(jti, str) and jti in self.store.denylist:
            raise ApiError(401, UNAUTHORIZED)
        uid = TokenService.user_id(claims)
        user = None if uid is None else self.store.users.get(ruby_to_i(uid))
        if user is None:
            raise ApiError(401, UNAUTHORIZED)
        return user

    def check_maintenance(self) -> None:
        if self.flags.enabled("maintenance_mode"):
            raise ApiError(503, MAINTENANCE)

    def render_stream(self, stream: StreamRecord, viewer: UserRecord) -> dict[str, object]:
        return stream_json(
            stream,
            self.store.users.get(stream.user_id),
            analytics=self.flags.enabled("stream_analytics", viewer.role, viewer.email),
            tags=self.flags.enabled("stream_tags", viewer.role, viewer.email),
        )


STATE: Final = web.AppKey("multibackend_emulator_state", EmulatorState)
