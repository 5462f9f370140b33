"""Options of the StreamSource backend (``[backends.<name>]`` in the configuration file).

Secrets (``password``, ``token``) are excluded from ``repr`` and never appear in error messages
built here: a misconfiguration names the key, never the value.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attrs

__all__ = ["Options"]


def _positive(inst: object, attribute: attrs.Attribute[Any], value: float | int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0 (got {value})")


def _non_negative(inst: object, attribute: attrs.Attribute[Any], value: float | int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0 (got {value})")


def _base_url(inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http:// or https:// URL (got {value[:80]!r})")
    if parts.query or parts.fragment:
        raise ValueError("base_url must not carry a query or a fragment")


def _per_page(inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= 100:
        raise ValueError(f"per_page must be between 1 and 100 (got {value})")


@attrs.frozen(kw_only=True)
class Options:
    """How to reach and authenticate with a StreamSource server.

    Authentication: give ``email`` and ``password`` (the backend logs in lazily and again before
    the token expires), or a pre-issued ``token`` (a service account's), or both (the token is
    used until it expires, then the backend logs in).

    Rate budget: ``requests_per_minute`` requests per 60 s by default; ``rate_limit_requests``
    with ``rate_limit_window`` (seconds) set any other window. Every request of the backend
    (logins included) is counted, and the server's ``X-RateLimit-*`` headers are obeyed too.
    """

    base_url: str = attrs.field(validator=_base_url)
    email: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    token: str | None = attrs.field(default=None, repr=False)
    requests_per_minute: int = attrs.field(default=1000, validator=_positive)
    rate_limit_requests: int | None = attrs.field(default=None, validator=_positive)
    rate_limit_window: float | None = attrs.field(default=None, validator=_positive)
    #: Seconds for a whole request (connect, send, read the answer).
    timeout: float = attrs.field(default=30.0, validator=_positive)
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    verify_tls: bool = True
    #: Log in again this many seconds before the token's ``exp``.
    refresh_margin: float = attrs.field(default=300.0, validator=_non_negative)
    #: On 429, wait for the server's reset when it is at most this far away; else raise.
    max_rate_limit_wait: float = attrs.field(default=60.0, validator=_non_negative)
    #: Page size of ``iter_streams`` walks (the server's maximum is 100).
    per_page: int = attrs.field(default=100, validator=_per_page)
    #: Extra attempts of an idempotent request after a transient failure.
    max_retries: int = attrs.field(default=3, validator=_non_negative)
    retry_backoff: float = attrs.field(default=0.5, validator=_positive)
    retry_max_backoff: float = attrs.field(default=10.0, validator=_positive)
    #: Connections kept in the pool (concurrent requests beyond it queue).
    max_connections: int = attrs.field(default=64, validator=_positive)
    #: Items per ``bulk_import`` request.
    bulk_chunk_size: int = attrs.field(default=100, validator=_positive)

    def __attrs_post_init__(self) -> None:
        has_email = self.email is not None
        has_password = self.password is not None
        if has_email != has_password:
            raise ValueError("email and password go together: give both, or neither with a token")
        if not has_email and self.token is None:
            raise ValueError("give email and password, or a token")
        if (self.rate_limit_requests is None) != (self.rate_limit_window is None):
            raise ValueError("rate_limit_requests and rate_limit_window go together")

    @property
    def has_credentials(self) -> bool:
        """True when the backend can log in (email and password configured)."""
        return self.email is not None and self.password is not None

    @property
    def rate_budget(self) -> tuple[int, float]:
        """The client-side budget as (requests, window in seconds)."""
        if self.rate_limit_requests is not None and self.rate_limit_window is not None:
            return self.rate_limit_requests, float(self.rate_limit_window)
        return self.requests_per_minute, 60.0
