"""The exceptions multibackend raises.

Every error a backend, the manager or the tools raise is one of these, so callers (and the sync
journal) decide what to do by type and by ``retryable``, never by matching message text::

    MultibackendError                      retryable
    ├── ConfigError                        no    a configuration file or option is wrong (``key``)
    ├── PluginError                        no    a plugin is unknown, broken or registered twice
    └── BackendError                       (per class; carries ``backend``, the configured name)
        ├── NotFound                       no    the entity does not exist in that backend
        ├── ValidationFailed               no    input breaks a rule (field, rule, problems)
        ├── AuthenticationFailed           no    credentials or token refused
        ├── PermissionDenied               no    authenticated, but not allowed
        ├── FeatureUnavailable             no    capability missing, or switched off by a flag
        ├── Conflict                       no    the change clashes with the backend's state
        ├── RateLimited                    yes   throttled; ``retry_at`` says when to try again
        └── Unavailable                    yes   transient: 5xx, timeouts, connection failures

Messages say what happened and what to do about it. They never contain secrets (passwords,
tokens): code that builds them from server responses must redact first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

__all__ = [
    "AuthenticationFailed",
    "BackendError",
    "ConfigError",
    "Conflict",
    "FeatureUnavailable",
    "MultibackendError",
    "NotFound",
    "PermissionDenied",
    "PluginError",
    "RateLimited",
    "Unavailable",
    "ValidationFailed",
]


class MultibackendError(Exception):
    """Base of every error multibackend raises.

    ``retryable`` is True when the same call may succeed later unchanged (the journal retries
    those with backoff); False when retrying cannot help (the journal parks the entry).
    """

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(MultibackendError):
    """A configuration file, section or option is wrong.

    ``key`` is the dotted path of the offending key (``backends.legacy.plugin``) when known;
    the message always starts with it so a user can find the line to fix.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class PluginError(MultibackendError):
    """A backend plugin is unknown, fails to import, or is registered by two distributions.

    ``plugin`` names the entry point; ``traceback`` holds the formatted original traceback when
    the plugin failed to import, so the cause is never lost behind stevedore's logging.
    """

    def __init__(
        self, message: str, *, plugin: str | None = None, traceback: str | None = None
    ) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.traceback = traceback


class BackendError(MultibackendError):
    """An operation on a backend failed. ``backend`` is the configured backend name (or None
    when the error was raised before any backend was involved, such as model validation)."""

    def __init__(self, message: str, *, backend: str | None = None) -> None:
        super().__init__(f"backend {backend!r}: {message}" if backend else message)
        self.backend = backend
        self.detail = message


class NotFound(BackendError):
    """The entity does not exist in the backend (or is not visible to its credentials)."""

    def __init__(
        self, message: str = "not found", *, backend: str | None = None, id: object = None
    ) -> None:
        super().__init__(message, backend=backend)
        self.id = id


class ValidationFailed(BackendError):
    """Input breaks a rule of the model or of the backend.

    ``field`` and ``rule`` name the first problem; ``problems`` holds every (field, message)
    pair when the backend reported several (the StreamSource server joins them in one string).
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        rule: str | None = None,
        problems: Sequence[tuple[str | None, str]] = (),
        backend: str | None = None,
    ) -> None:
        super().__init__(message, backend=backend)
        self.field = field
        self.rule = rule
        self.problems: tuple[tuple[str | None, str], ...] = tuple(problems) or (
            ((field, message),) if field else ()
        )


class AuthenticationFailed(BackendError):
    """The backend refused the credentials or the token (HTTP 401)."""


class PermissionDenied(BackendError):
    """Authenticated, but the account may not do this (HTTP 403 from a role or ownership rule)."""


class FeatureUnavailable(BackendError):
    """The backend lacks the capability, or the server has switched the feature off."""


class Conflict(BackendError):
    """The change clashes with the backend's current state (for example a uniqueness rule)."""


class RateLimited(BackendError):
    """The backend throttled the call. Retry at ``retry_at`` (timezone-aware UTC) or later;
    when the server did not say, ``retry_at`` is None and callers back off on their own."""

    retryable = True

    def __init__(
        self,
        message: str = "rate limited",
        *,
        retry_at: datetime | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(message, backend=backend)
        self.retry_at = retry_at


class Unavailable(BackendError):
    """A transient failure: a 5xx answer, a timeout, a refused or dropped connection, a server in
    maintenance. The same call may succeed later."""

    retryable = True
