"""HTTP transport: one pooled ``aiohttp.ClientSession`` per backend, one attempt per ``send``.

The transport sends a request inside the rate budget and returns the answer, whatever its status;
deciding what a status means (errors, retries, re-login) is the client's job
(:mod:`multibackend_streamsource.client`). Network failures become :class:`Unavailable` here:
:class:`NotSent` when the connection could not even be made (safe to retry any request), plain
:class:`Unavailable` when the request may have reached the server.

Nothing here logs headers or bodies: they carry tokens and passwords.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import attrs
from multidict import CIMultiDictProxy

from multibackend.errors import BackendError, Unavailable
from multibackend_streamsource.ratelimit import RateBudget
from multibackend_streamsource.redact import Redactor

__all__ = ["NotSent", "Response", "Transport"]

log = logging.getLogger(__name__)

_USER_AGENT = "multibackend-streamsource/0.1"


class NotSent(Unavailable):
    """The connection could not be made: the server never saw the request."""


@attrs.frozen
class Response:
    """An answer: status, headers, the parsed JSON body (None when empty or not JSON) and the
    raw text (for error messages when the body is not JSON)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: Any
    text: str
    method: str
    path: str

    @property
    def is_json(self) -> bool:
        return self.body is not None


class Transport:
    """Owns the ClientSession. ``open()`` creates it, ``close()`` closes it (both idempotent)."""

    def __init__(
        self,
        *,
        backend: str,
        base_url: str,
        budget: RateBudget,
        redactor: Redactor,
        timeout: float,
        connect_timeout: float,
        verify_tls: bool,
        max_connections: int,
        max_rate_limit_wait: float,
    ) -> None:
        self._backend = backend
        self._base_url = base_url.rstrip("/")
        self.budget = budget
        self._redactor = redactor
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, connect=connect_timeout, sock_connect=connect_timeout
        )
        self._verify_tls = verify_tls
        self._max_connections = max_connections
        self._max_rate_limit_wait = max_rate_limit_wait
        self._session: aiohttp.ClientSession | None = None

    @property
    def is_open(self) -> bool:
        return self._session is not None and not self._session.closed

    async def open(self) -> None:
        if self.is_open:
            return
        ssl_option: ssl.SSLContext | bool = True
        if not self._verify_tls:
            log.warning(
                "backend %r: TLS certificate verification is OFF (verify_tls = false); "
                "anyone on the path can read the token and the data",
                self._backend,
            )
            ssl_option = False
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=self._max_connections,
            ssl=ssl_option,
            keepalive_timeout=30,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"Accept": "application/json", "User-Agent": _USER_AGENT},
            # The server's JSON is read by us; aiohttp must not second-guess content types.
            raise_for_status=False,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        token: str | None = None,
    ) -> Response:
        """Send one request within the budget and return the answer (any status)."""
        if self._session is None or self._session.closed:
            # A programming error, not a transient one: retrying cannot help.
            raise BackendError(
                "the backend is not open (call open() or use 'async with')", backend=self._backend
            )
        await self.budget.acquire(self._max_rate_limit_wait)
        headers: dict[str, str] = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data: bytes | None = None
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        url = self._base_url + path
        started = time.perf_counter()
        answer_headers: CIMultiDictProxy[str] | None = None
        try:
            async with self._session.request(
                method, url, params=params, data=data, headers=headers, allow_redirects=False
            ) as resp:
                answer_headers = resp.headers
                raw = await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(
                f"{method} {path}: cannot connect to {self._base_url} "
                f"({self._redactor(str(exc.os_error) or type(exc).__name__)})",
                backend=self._backend,
            ) from None
        except TimeoutError:
            raise Unavailable(
                f"{method} {path}: no answer within the timeout "
                f"({self._timeout.total:g} s); the request may or may not have been applied",
                backend=self._backend,
            ) from None
        except aiohttp.ClientError as exc:
            raise Unavailable(
                f"{method} {path}: connection failed ({type(exc).__name__}: "
                f"{self._redactor(str(exc))[:200]}); the request may or may not have been applied",
                backend=self._backend,
            ) from None
        finally:
            self.budget.release(answer_headers)
        elapsed = (time.perf_counter() - started) * 1000
        text = raw.decode("utf-8", errors="replace")
        body: Any = None
        if text.strip():
            try:
                body = json.loads(text)
            except (ValueError, RecursionError):
                # Malformed, or nested too deep for the decoder: not an answer we can read.
                body = None
        log.debug("%s %s -> %d (%.1f ms)", method, path, status, elapsed)
        return Response(
            status=status,
            headers=answer_headers,
            body=body,
            text=text,
            method=method,
            path=path,
        )
