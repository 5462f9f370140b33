"""The API client: one call = auth + rate budget + retries + error mapping over the transport.

Policy of :meth:`ApiClient.call`:

* **401** on an authenticated call: forget the token, log in again (single flight) and replay the
  request once; a second 401 raises :class:`AuthenticationFailed`. The server refuses a 401
  request before doing anything, so replaying a create is safe.
* **429**: every coroutine of the backend pauses until the server's reset (X-RateLimit-Reset or
  Retry-After); this call then replays (the throttled request was never processed), unless the
  reset is more than ``max_rate_limit_wait`` away: then RateLimited at once.
* **transient failures** (5xx other than maintenance, timeouts, dropped connections): idempotent
  calls (GET, PUT, PATCH, DELETE) retry with jittered exponential backoff, at most
  ``max_retries`` times. A non-idempotent call (POST create, bulk import) is retried only when
  the connection could not be made at all — a create that timed out may have happened, and only
  the caller can tell.
* everything else maps to its error (:mod:`multibackend_streamsource.error_mapping`).

The client also carries the dialect (today's API, or the guide's older one, remembered after a
404 on ``/api/v1/login``) and the login and signup calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import Any

import attrs

from multibackend.errors import (
    AuthenticationFailed,
    BackendError,
    NotFound,
    RateLimited,
    Unavailable,
)
from multibackend.model import User
from multibackend_streamsource.auth import Authenticator
from multibackend_streamsource.dialects import CURRENT, GUIDE, Dialect, token_from_login
from multibackend_streamsource.error_mapping import is_maintenance, map_error
from multibackend_streamsource.ratelimit import parse_retry_at
from multibackend_streamsource.redact import Redactor
from multibackend_streamsource.serialization import BadAnswer, user_from_json
from multibackend_streamsource.transport import NotSent, Response, Transport

__all__ = ["ApiClient", "RetryPolicy"]

log = logging.getLogger(__name__)

# A call waits out at most this many 429s in a row before giving up with RateLimited.
_MAX_RATE_LIMIT_WAITS = 5


@attrs.frozen
class RetryPolicy:
    """Bounded, jittered exponential backoff: attempt n waits between half and all of
    ``min(max_backoff, backoff * 2**n)`` seconds."""

    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0

    def delay(self, attempt: int) -> float:
        cap = min(self.max_backoff, self.backoff * (2**attempt))
        return random.uniform(cap / 2, cap)


class ApiClient:
    """Sends calls for one backend. Construct, then ``attach(authenticator)``."""

    def __init__(
        self,
        *,
        backend: str,
        transport: Transport,
        redactor: Redactor,
        retry: RetryPolicy,
        max_rate_limit_wait: float,
    ) -> None:
        self._backend = backend
        self.transport = transport
        self._redact = redactor
        self._retry = retry
        self._max_rate_limit_wait = max_rate_limit_wait
        self.dialect: Dialect = CURRENT
        self._auth: Authenticator | None = None

    def attach(self, auth: Authenticator) -> None:
        self._auth = auth

    @property
    def auth(self) -> Authenticator:
        if self._auth is None:
            raise RuntimeError("ApiClient used before attach(authenticator)")
        return self._auth

    async def call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        authenticated: bool = True,
        idempotent: bool | None = None,
        id: object = None,
    ) -> Response:
        """Send the call under the policy above; return the 2xx answer or raise."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "PATCH", "DELETE")
        attempt = 0
        replayed_401 = False
        rate_waits = 0
        while True:
            token = await self.auth.bearer() if authenticated else None
            try:
                resp = await self.transport.send(
                    method, path, params=params, json_body=json_body, token=token
                )
            except NotSent as exc:
                if attempt < self._retry.max_retries:
                    await self._backoff(attempt, what, exc)
                    attempt += 1
                    continue
                raise self._named(exc, what) from None
            except RateLimited:
                raise
            except Unavailable as exc:
                if idempotent and attempt < self._retry.max_retries:
                    await self._backoff(attempt, what, exc)
                    attempt += 1
                    continue
                raise self._named(exc, what) from None
            if resp.status < 300:
                return resp
            if resp.status == 401 and authenticated and token is not None:
                self.auth.invalidate(token)
                if not self.auth.can_login:
                    raise self.auth.refused()
                if not replayed_401:
                    replayed_401 = True
                    log.info(
                        "backend %r: %s: token refused (401); logging in again and replaying once",
                        self._backend,
                        what,
                    )
                    continue
                raise AuthenticationFailed(
                    f"{what}: the server refused a fresh token too (401 after logging in "
                    "again); the account may be locked or deleted",
                    backend=self._backend,
                )
            if resp.status == 429:
                retry_at = parse_retry_at(resp.headers)
                wait = self.transport.budget.penalize(retry_at)
                if wait <= self._max_rate_limit_wait and rate_waits < _MAX_RATE_LIMIT_WAITS:
                    rate_waits += 1
                    # The next send waits in the budget until the reset, with every other call.
                    continue
                raise map_error(resp, backend=self._backend, redact=self._redact, what=what)
            if (
                resp.status >= 500
                and idempotent
                and not is_maintenance(resp)
                and attempt < self._retry.max_retries
            ):
                err = map_error(resp, backend=self._backend, redact=self._redact, what=what)
                await self._backoff(attempt, what, err)
                attempt += 1
                continue
            raise map_error(resp, backend=self._backend, redact=self._redact, what=what, id=id)

    def _named(self, exc: Unavailable, what: str) -> Unavailable:
        return type(exc)(f"{what}: {exc.detail}", backend=self._backend)

    async def _backoff(self, attempt: int, what: str, exc: BackendError) -> None:
        delay = self._retry.delay(attempt)
        log.info(
            "backend %r: %s failed (%s); retry %d/%d in %.2f s",
            self._backend,
            what,
            exc.detail,
            attempt + 1,
            self._retry.max_retries,
            delay,
        )
        await asyncio.sleep(delay)

    # --- authentication calls -----------------------------------------------------------------

    async def login(self, email: str, password: str) -> tuple[str, User | None]:
        """Log in; return (token, user). Falls back to the guide's dialect, for good, when the
        server does not know today's login path."""
        try:
            resp = await self._login_with(self.dialect, email, password)
        except NotFound:
            if self.dialect is GUIDE:
                raise self._no_login_path() from None
            log.info(
                "backend %r: %s answered 404; switching to the older API of the "
                "integration guide (%s)",
                self._backend,
                CURRENT.login_path,
                GUIDE.login_path,
            )
            self.dialect = GUIDE
            try:
                resp = await self._login_with(GUIDE, email, password)
            except NotFound:
                self.dialect = CURRENT
                raise self._no_login_path() from None
        token = token_from_login(resp.body)
        if token is None:
            raise Unavailable(
                f"login: the answer carries no token ({resp.status}, "
                f"{'JSON' if resp.is_json else 'not JSON'})",
                backend=self._backend,
            )
        self._redact.add(token)
        user = None
        if isinstance(resp.body, dict):
            user = _safe_user(resp.body.get("user"))
        return token, user

    async def _login_with(self, dialect: Dialect, email: str, password: str) -> Response:
        try:
            return await self.call(
                "POST",
                dialect.login_path,
                what=f"log in as {email}",
                json_body=dialect.login_body(email, password),
                authenticated=False,
                idempotent=True,  # logging in twice does no harm
            )
        except AuthenticationFailed as exc:
            raise AuthenticationFailed(
                f"log in as {email}: the server refused the email or password "
                f"({exc.detail.rpartition('(')[2].rstrip(')')})",
                backend=self._backend,
            ) from None

    def _no_login_path(self) -> BackendError:
        return BackendError(
            f"neither {CURRENT.login_path} nor {GUIDE.login_path} exists on the server: "
            "check base_url (it must point at the StreamSource server's root)",
            backend=self._backend,
        )

    async def signup(self, email: str, password: str) -> Response:
        """POST the signup in the current dialect (falling back like login). The caller handles
        the server's 500-after-create quirk."""
        try:
            return await self._signup_with(self.dialect, email, password)
        except NotFound:
            if self.dialect is GUIDE:
                raise
            self.dialect = GUIDE
            return await self._signup_with(GUIDE, email, password)

    async def _signup_with(self, dialect: Dialect, email: str, password: str) -> Response:
        return await self.call(
            "POST",
            dialect.signup_path,
            what=f"sign up {email}",
            json_body=dialect.signup_body(email, password),
            authenticated=False,
            idempotent=False,
        )


def _safe_user(value: Any) -> User | None:
    try:
        return user_from_json(value)
    except BadAnswer:
        return None
