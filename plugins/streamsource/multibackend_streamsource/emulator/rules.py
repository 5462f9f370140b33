"""The Stream and User model rules of the server (contract §1.1, §1.2, §2, §7).

Assignment follows ActiveRecord: a permitted key whose value is an object or an array is dropped
(``permit`` keeps scalars only); strings columns cast scalars (``true`` -> "t", 12 -> "12");
``link`` is stripped; an enum column takes its key or stored spelling, a blank value (``""``,
whitespace, ``false``, null) becomes null, and anything else raises :class:`EnumValueError`, which
the server does not handle (HTTP 500). Validation returns full messages in declaration order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from multibackend.backend import status_side_effects
from multibackend.errors import ValidationFailed
from multibackend.model import StreamStatus, check_link
from multibackend_streamsource.emulator.params import blank, cast_string, ruby_to_i
from multibackend_streamsource.emulator.records import CONTENT_COLUMNS, ENUM_LOOKUP, StreamRecord

__all__ = [
    "UNRECOGNIZED_CITY",
    "EnumValueError",
    "KnownCities",
    "apply_save",
    "assign",
    "permitted",
    "signup_errors",
    "to_sentence",
    "validate_stream",
]

UNRECOGNIZED_CITY: Final = "City is not a recognized city. Please contact an admin to add it."
_EMAIL: Final = re.compile(r"\A[^@\s]+@[^@\s]+\Z")
_RUBY_STRIP: Final = " \t\n\v\f\r\x00"


class EnumValueError(Exception):
    """An invalid enum value was assigned (Rails raises ArgumentError: HTTP 500)."""

    def __init__(self, column: str, value: object) -> None:
        super().__init__(f"{value!r} is not a valid {column}")
        self.column = column


def permitted(params: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``params.permit(*keys)``: the keys present with scalar values, in ``keys`` order."""
    return {
        key: params[key]
        for key in keys
        if key in params and not isinstance(params[key], dict | list)
    }


def assign(stream: StreamRecord, values: Mapping[str, Any]) -> None:
    """Assign permitted values to ``stream`` with ActiveRecord's casts; raise EnumValueError."""
    for key, value in values.items():
        lookup = ENUM_LOOKUP.get(key)
        if lookup is not None:
            if blank(value):
                setattr(stream, key, None)
            elif isinstance(value, str) and value in lookup:
                setattr(stream, key, lookup[value])
            else:
                raise EnumValueError(key, value)
        elif key == "location_id":
            stream.location_id = None if blank(value) else ruby_to_i(value)
        else:
            text = cast_string(value)
            if key == "link" and text is not None:
                text = text.strip(_RUBY_STRIP)
            setattr(stream, key, text)


class KnownCities:
    """Known-city locations for the ``location_validation`` flag (none unless added)."""

    def __init__(self) -> None:
        self._cities: set[tuple[str, str | None]] = set()

    def add(self, city: str, state: str | None = None) -> None:
        self._cities.add((city.strip().lower(), None if state is None else state.strip().lower()))

    def clear(self) -> None:
        self._cities.clear()

    def matches(self, city: str | None, state: str | None) -> bool:
        """A known city named ``city`` (any case) whose state is ``state`` or unset."""
        if blank(city):
            return False
        assert city is not None
        wanted = city.strip().lower()
        st = None if blank(state) else (state or "").strip().lower()
        return any(c == wanted and (s is None or s == st) for c, s in self._cities)


def validate_stream(
    stream: StreamRecord,
    owner_email: str,
    *,
    location_validation: bool = False,
    known_cities: KnownCities | None = None,
) -> list[str]:
    """Run before_validation and validations; return full messages (empty when valid)."""
    if blank(stream.posted_by):
        stream.posted_by = owner_email
    errors: list[str] = []
    link = stream.link
    if blank(link):
        errors += ["Link can't be blank", "Link must be a valid HTTP or HTTPS URL"]
    else:
        try:
            check_link(link)
        except ValidationFailed:
            errors.append("Link must be a valid HTTP or HTTPS URL")
    if blank(stream.source):
        errors.append("Source can't be blank")
    length = len(stream.source or "")
    if length < 1:
        errors.append("Source is too short (minimum is 1 character)")
    elif length > 255:
        errors.append("Source is too long (maximum is 255 characters)")
    if stream.status is None:
        errors.append("Status is not included in the list")
    if stream.kind is None:
        errors.append("Kind is not included in the list")
    if (
        location_validation
        and not (blank(stream.city) and blank(stream.state))
        and not (known_cities is not None and known_cities.matches(stream.city, stream.state))
    ):
        errors.append(UNRECOGNIZED_CITY)
    return errors


def apply_save(stream: StreamRecord, before: StreamRecord | None, now: datetime) -> bool:
    """before_save callbacks and timestamps; True when the row changed (and must be written).

    ``before`` is the row as stored (None on create). Status side effects (§7) come from the core
    rule; ``started_at`` is set when the stream first goes live.
    """
    old_status = None if before is None or before.status is None else StreamStatus(before.status)
    if stream.status is not None and (before is None or before.status != stream.status):
        effects = status_side_effects(old_status, StreamStatus(stream.status), {}, now)
        for name, value in effects.items():
            setattr(stream, name, value)
        if stream.status == "live" and stream.started_at is None:
            stream.started_at = now
    if before is None:
        stream.created_at = stream.updated_at = now
        return True
    changed = any(getattr(stream, c) != getattr(before, c) for c in CONTENT_COLUMNS)
    if changed:
        stream.updated_at = now
    return changed


def to_sentence(items: list[str]) -> str:
    """Rails' ``Array#to_sentence`` in English ("a", "a and b", "a, b, and c")."""
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + ", and " + items[-1]


def signup_errors(
    email: str | None, password: str | None, confirmation: str | None, *, taken: bool
) -> list[str]:
    """Devise validatable and the app's password rule, in declaration order.

    ``email`` must already be stripped and lower-cased; ``taken`` says whether it exists.
    """
    errors: list[str] = []
    if blank(email):
        errors.append("Email can't be blank")
    else:
        if taken:
            errors.append("Email has already been taken")
        if not _EMAIL.match(email or ""):
            errors.append("Email is invalid")
    if blank(password):
        errors.append("Password can't be blank")
    if confirmation is not None and confirmation != password:
        errors.append("Password confirmation doesn't match Password")
    if not blank(password):
        assert password is not None
        if len(password) < 8:
            errors.append("Password is too short (minimum is 8 characters)")
        elif len(password) > 128:
            errors.append("Password is too long (maximum is 128 characters)")
        if not (
            re.search(r"[a-z]", password)
            and re.search(r"[A-Z]", password)
            and re.search(r"\d", password)
        ):
            errors.append("Password must include lowercase, uppercase, and number")
    return errors
