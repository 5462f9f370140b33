"""Database errors mapped onto the multibackend error tree.

The journal decides by type and ``retryable`` whether to retry, so the mapping matters more than
the message:

* lost or refused connections, timeouts, pool exhaustion, SQLite's "database is locked",
  PostgreSQL serialization failures, deadlocks, lock timeouts, shutdowns → ``Unavailable``
  (retryable);
* unique and foreign-key violations → ``Conflict``;
* NOT NULL and CHECK violations, bad data (too long, out of range) → ``ValidationFailed``;
* anything else (a table changed under us, a syntax error) → ``BackendError``, not retryable.

Messages carry the driver's first line of text, never the SQL parameters, and the URL's
password is scrubbed from them in case a driver echoes it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import exc as sa_exc

from multibackend.errors import (
    BackendError,
    Conflict,
    Unavailable,
    ValidationFailed,
)

__all__ = ["translate"]

# PostgreSQL SQLSTATE codes (appendix A of its manual) that a later retry may get past.
_TRANSIENT_STATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57014",  # query_canceled (statement_timeout)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
        "53400",  # configuration_limit_exceeded
    }
)
_INVALID_DATA_STATES = frozenset({"23502", "23514"})  # not_null_violation, check_violation

_SQLITE_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "disk i/o error",
    "unable to open database",
)


def translate(exc: BaseException, *, backend: str, secrets: Iterable[str] = ()) -> BackendError:
    """The multibackend error for a database exception (SQLAlchemy, driver or OS level)."""
    text = _scrub(_first_line(exc), secrets)
    if isinstance(exc, sa_exc.DBAPIError):
        return _from_dbapi(exc, text, backend)
    if isinstance(exc, sa_exc.TimeoutError):
        return Unavailable(f"no free database connection: {text}", backend=backend)
    if isinstance(exc, OSError):
        # Includes TimeoutError and ConnectionRefusedError raised while connecting.
        return Unavailable(f"cannot reach the database: {text}", backend=backend)
    return BackendError(f"database error: {text}", backend=backend)


def _from_dbapi(exc: sa_exc.DBAPIError, text: str, backend: str) -> BackendError:
    orig = exc.orig
    state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    lowered = text.lower()
    if exc.connection_invalidated or state.startswith("08") or state in _TRANSIENT_STATES:
        return Unavailable(f"database unavailable: {text}", backend=backend)
    if state in _INVALID_DATA_STATES or state.startswith("22"):
        return ValidationFailed(f"the database refused the values: {text}", backend=backend)
    if state.startswith("23"):
        return Conflict(f"the database refused the change: {text}", backend=backend)
    if state.startswith("42"):
        return BackendError(
            f"the table does not match the mapping (was it altered?): {text}", backend=backend
        )
    if any(marker in lowered for marker in _SQLITE_TRANSIENT):
        return Unavailable(f"database unavailable: {text}", backend=backend)
    if isinstance(exc, sa_exc.IntegrityError):
        if "not null" in lowered or "check constraint" in lowered:
            return ValidationFailed(f"the database refused the values: {text}", backend=backend)
        return Conflict(f"the database refused the change: {text}", backend=backend)
    if isinstance(exc, sa_exc.DataError):
        return ValidationFailed(f"the database refused the values: {text}", backend=backend)
    if "no such table" in lowered or "no such column" in lowered or "has no column" in lowered:
        return BackendError(
            f"the table does not match the mapping (was it altered?): {text}", backend=backend
        )
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return Unavailable(f"database unavailable: {text}", backend=backend)
    return BackendError(f"database error: {text}", backend=backend)


def _first_line(exc: BaseException) -> str:
    source: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        # str(DBAPIError) appends the SQL and its parameters; the driver's text is enough.
        source = exc.orig
    text = str(source).strip() or type(source).__name__
    line = text.splitlines()[0]
    if len(line) > 300:
        line = line[:297] + "..."
    return f"{type(source).__name__}: {line}"


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
