"""The bearer token: lazy login, refresh before expiry, single flight, invalidation on 401.

The token's ``exp`` is read without verifying the signature (PyJWT): the client cannot verify
it (the server's secret) and only needs to know when to log in again. A token that carries no
``exp`` (or is not a JWT) is used until the server refuses it.

Single flight: however many coroutines find the token missing or about to expire, one logs in
and the others wait for its result under one lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import jwt

from multibackend.errors import AuthenticationFailed

__all__ = ["Authenticator", "token_claims_expiry"]

log = logging.getLogger(__name__)


def token_claims_expiry(token: str) -> tuple[float | None, float | None]:
    """(exp, iat) of a JWT as epoch seconds, unverified; (None, None) when unreadable."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        return None, None
    exp, iat = claims.get("exp"), claims.get("iat")
    return (
        float(exp) if isinstance(exp, int | float) else None,
        float(iat) if isinstance(iat, int | float) else None,
    )


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


class Authenticator:
    """Hands out a valid bearer token, logging in through ``login`` when needed.

    ``login`` is None in token-only mode (no email/password): then an expired or refused token
    raises :class:`AuthenticationFailed` saying that the backend cannot log in by itself.
    """

    def __init__(
        self,
        *,
        backend: str,
        token: str | None,
        refresh_margin: float,
        login: Callable[[], Awaitable[str]] | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self._margin = refresh_margin
        self._login = login
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._exp: float | None = None
        self._refresh_at: float | None = None
        self._configured = token is not None
        #: How many logins this authenticator made (for tests and metrics).
        self.logins = 0
        if token is not None:
            self._adopt(token)

    def __repr__(self) -> str:
        state = "token held" if self._token else "no token"
        return f"<Authenticator {self._backend!r}: {state}>"

    @property
    def can_login(self) -> bool:
        return self._login is not None

    @property
    def expires_at(self) -> float | None:
        """The current token's ``exp`` (epoch seconds), if known."""
        return self._exp

    def _adopt(self, token: str) -> None:
        exp, iat = token_claims_expiry(token)
        self._token, self._exp = token, exp
        if exp is None:
            self._refresh_at = None
            return
        # A margin wider than half the token's life would log in on every request.
        life = exp - (iat if iat is not None else self._clock())
        margin = min(self._margin, max(life, 0.0) / 2)
        self._refresh_at = exp - margin

    def _usable(self, now: float) -> bool:
        if self._token is None:
            return False
        if self._exp is None:
            return True
        if self._login is None:
            return now < self._exp  # nobody can refresh it: use it to the end
        assert self._refresh_at is not None
        return now < self._refresh_at

    async def bearer(self) -> str:
        """A token good for the next request."""
        token = self._token
        if token is not None and self._usable(self._clock()):
            return token
        async with self._lock:
            now = self._clock()
            if self._token is not None and self._usable(now):
                return self._token
            if self._login is None:
                raise self._cannot_login(now)
            reason = "no token yet" if self._token is None else "token expires soon"
            log.debug("backend %r: logging in (%s)", self._backend, reason)
            token = await self._login()
            self.logins += 1
            self._adopt(token)
            if self._exp is not None:
                log.debug(
                    "backend %r: logged in; token valid until %s", self._backend, _when(self._exp)
                )
            return token

    def invalidate(self, token: str) -> None:
        """The server refused ``token`` (401): forget it so the next ``bearer()`` logs in.
        A token already replaced by another coroutine's login is left alone."""
        if self._token == token:
            self._token = None
            self._exp = None
            self._refresh_at = None

    def _cannot_login(self, now: float) -> AuthenticationFailed:
        if self._token is not None and self._exp is not None and now >= self._exp:
            return AuthenticationFailed(
                f"the configured token expired at {_when(self._exp)} and no email/password "
                "are configured to log in again: configure a fresh token, or email and "
                "password",
                backend=self._backend,
            )
        return AuthenticationFailed(
            "the server refused the configured token (expired or revoked) and no "
            "email/password are configured to log in again: configure a fresh token, or "
            "email and password",
            backend=self._backend,
        )

    def refused(self) -> AuthenticationFailed:
        """The error for a token the server refused when no login is possible."""
        return self._cannot_login(self._clock())
