"""From a non-2xx answer of the StreamSource server to a :mod:`multibackend.errors` exception.

The mapping follows the server's contract (§1.0, §2, §5): 401 AuthenticationFailed; 403
FeatureUnavailable when the message says a feature is off, else PermissionDenied; 404 NotFound;
422 ValidationFailed with the server's single message split into (field, message) problems; 429
RateLimited with ``retry_at``; 503 with ``maintenance: true`` Unavailable saying so; other 5xx
Unavailable; 400 ValidationFailed (malformed request). Bodies that are not JSON (proxies, HTML
failsafe pages) are handled: the message quotes a short, redacted excerpt.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from multibackend.errors import (
    AuthenticationFailed,
    BackendError,
    Conflict,
    FeatureUnavailable,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
    ValidationFailed,
)
from multibackend_streamsource.ratelimit import parse_retry_at
from multibackend_streamsource.transport import Response

__all__ = ["error_message", "map_error", "split_validation_message"]

# Human attribute names Rails puts in front of each message, and the field they stand for.
_ATTRIBUTES: Final = {
    "Posted by": "posted_by",
    "Password confirmation": "password_confirmation",
    "Link": "link",
    "Source": "source",
    "Status": "status",
    "Platform": "platform",
    "Orientation": "orientation",
    "Kind": "kind",
    "City": "city",
    "State": "state",
    "Notes": "notes",
    "Title": "title",
    "User": "user",
    "Location": "location",
    "Email": "email",
    "Password": "password",
}
_ATTR_ALT: Final = "|".join(re.escape(a) for a in sorted(_ATTRIBUTES, key=len, reverse=True))
# Split before each "<Attribute> " that follows ", " or " and " (Rails' to_sentence / join).
_SPLIT: Final = re.compile(rf"(?:, | and )(?=(?:{_ATTR_ALT}) )")
_FEATURE_OFF: Final = re.compile(r"not currently available", re.IGNORECASE)
_SIGNUP_PREFIX: Final = "User couldn't be created successfully."


def error_message(resp: Response, redact: Callable[[str], str]) -> str:
    """The server's message for an error answer, redacted; a short excerpt when not JSON."""
    body = resp.body
    message: str | None = None
    if isinstance(body, dict):
        error = body.get("error")
        status = body.get("status")
        errors = body.get("errors")
        if isinstance(error, str):
            message = error
        elif isinstance(status, dict) and isinstance(status.get("message"), str):
            message = status["message"]
        elif isinstance(errors, list) and all(isinstance(e, str) for e in errors):
            message = ", ".join(errors)
        elif error is not None:
            message = str(error)
    if message is None:
        excerpt = " ".join(resp.text.split())[:160]
        message = (
            f"HTTP {resp.status} with a non-JSON body: {excerpt!r}"
            if excerpt
            else (f"HTTP {resp.status} with an empty body")
        )
    return redact(message)


def split_validation_message(message: str) -> list[tuple[str | None, str]]:
    """Split the server's joined validation message into (field, message) problems.

    ``"Link must be a valid HTTP or HTTPS URL, Source can't be blank"`` gives
    ``[("link", "must be a valid HTTP or HTTPS URL"), ("source", "can't be blank")]``; a part
    that does not start with a known attribute keeps field None and its whole text.
    """
    text = message.strip()
    if text.startswith(_SIGNUP_PREFIX):
        text = text[len(_SIGNUP_PREFIX) :].strip()
    if text.startswith("Location validation failed"):
        rest = text.partition(":")[2].strip()
        return [("location", rest or "validation failed")]
    problems: list[tuple[str | None, str]] = []
    for part in _SPLIT.split(text):
        part = part.strip()
        if not part:
            continue
        for attribute in sorted(_ATTRIBUTES, key=len, reverse=True):
            if part.startswith(attribute + " "):
                problems.append((_ATTRIBUTES[attribute], part[len(attribute) + 1 :]))
                break
        else:
            problems.append((None, part))
    return problems


def map_error(
    resp: Response,
    *,
    backend: str,
    redact: Callable[[str], str],
    what: str,
    id: object = None,
) -> BackendError:
    """The exception for an error answer. ``what`` says what was attempted ("get stream 12")."""
    message = error_message(resp, redact)
    status = resp.status
    if status == 401:
        return AuthenticationFailed(
            f"{what}: the server refused the credentials ({message})", backend=backend
        )
    if status == 403:
        if _FEATURE_OFF.search(message):
            return FeatureUnavailable(
                f"{what}: switched off on the server ({message}); ask an admin to enable the "
                "feature flag",
                backend=backend,
            )
        return PermissionDenied(
            f"{what}: not allowed for this account ({message}); writes need role editor or "
            "admin, and editors may change only their own streams",
            backend=backend,
        )
    if status == 404:
        return NotFound(f"{what}: {message}", backend=backend, id=id)
    if status == 409:
        return Conflict(f"{what}: {message}", backend=backend)
    if status in (400, 422):
        problems = split_validation_message(message) if status == 422 else [(None, message)]
        field = problems[0][0] if problems else None
        return ValidationFailed(
            f"{what}: the server refused the data ({message})",
            field=field,
            rule="server",
            problems=problems,
            backend=backend,
        )
    if status == 429:
        retry_epoch = parse_retry_at(resp.headers)
        retry_at = None if retry_epoch is None else datetime.fromtimestamp(retry_epoch, UTC)
        when = f"; retry at {retry_at.isoformat(timespec='seconds')}" if retry_at else ""
        return RateLimited(
            f"{what}: throttled by the server ({message}){when}", retry_at=retry_at, backend=backend
        )
    if status == 503 and isinstance(resp.body, dict) and resp.body.get("maintenance") is True:
        return Unavailable(
            f"{what}: the server is in maintenance mode ({message}); try again later",
            backend=backend,
        )
    if status >= 500:
        return Unavailable(f"{what}: server error {status} ({message})", backend=backend)
    if 300 <= status < 400:
        target = resp.headers.get("Location", "?")
        return BackendError(
            f"{what}: the server redirects to {redact(target)[:120]} (HTTP {status}); set "
            "base_url to the address it redirects to (production servers force https)",
            backend=backend,
        )
    return BackendError(f"{what}: unexpected answer {status} ({message})", backend=backend)


def is_maintenance(resp: Response) -> bool:
    """True for the server's maintenance answer (503 with ``maintenance: true``)."""
    body: Any = resp.body
    return resp.status == 503 and isinstance(body, dict) and body.get("maintenance") is True
