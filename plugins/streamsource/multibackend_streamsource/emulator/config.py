"""Start-up settings of an emulator, and the parsers the CLI uses for them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from multibackend_streamsource.emulator.app import DEFAULT_MAX_BODY
from multibackend_streamsource.emulator.records import ROLES

__all__ = ["EmulatorConfig", "UserSpec", "parse_flag", "parse_rate_limit", "parse_user"]


@attrs.frozen(kw_only=True)
class UserSpec:
    """A user to create at start (or update, when the email exists in the ``db`` file)."""

    email: str
    password: str = attrs.field(repr=False)
    role: str = "editor"
    service_account: bool = False


def _user_tuple(users: Iterable[UserSpec]) -> tuple[UserSpec, ...]:
    return tuple(users)


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """How an emulator starts. Everything but ``host``, ``port``, ``db_path``, ``secret`` and
    ``max_body`` can be changed later through the control API.

    - ``flags``: overrides of the seeded defaults, ``{"stream_tags": "all"}``;
    - ``rate_limit`` requests per ``rate_period`` seconds per client IP; localhost is throttled
      too unless ``localhost_exempt`` (the real server's behaviour);
    - ``signup_500``: reproduce the server's 500 after a successful signup;
    - ``db_path``: keep state in this SQLite file between runs (default: memory only);
    - ``secret``: the HS256 key (default: random, or the one stored in ``db_path``);
    - ``latency``/``error_rate``: faults from the start; ``seed`` makes random faults repeatable.
    """

    host: str = "127.0.0.1"
    port: int = 0
    users: tuple[UserSpec, ...] = attrs.field(default=(), converter=_user_tuple)
    flags: Mapping[str, str] = attrs.field(factory=dict)
    rate_limit: int = 1000
    rate_period: float = 60.0
    localhost_exempt: bool = False
    signup_500: bool = True
    db_path: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    secret: str | None = attrs.field(default=None, repr=False)
    max_body: int = DEFAULT_MAX_BODY
    latency: float = 0.0
    error_rate: float = 0.0
    seed: int | None = None


def parse_user(text: str) -> UserSpec:
    """``EMAIL:PASSWORD:ROLE`` or ``EMAIL:PASSWORD:ROLE:service`` (a service account, whose
    tokens last 30 days). The password may contain colons."""
    service = text.endswith(":service")
    if service:
        text = text[: -len(":service")]
    email, sep, rest = text.partition(":")
    password, sep2, role = rest.rpartition(":")
    if not sep or not sep2 or not email or not password:
        raise ValueError(f"expected EMAIL:PASSWORD:ROLE, got {text.split(':', 1)[0]}:...")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} for {email}: use one of {', '.join(ROLES)}")
    return UserSpec(email=email, password=password, role=role, service_account=service)


def parse_flag(text: str) -> tuple[str, str]:
    """``NAME=all|editors|admins|off``."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"expected NAME=all|editors|admins|off, got {text!r}")
    return name.strip(), value.strip()


def parse_rate_limit(text: str) -> tuple[int, float]:
    """``N`` or ``N/SECONDS`` (the window defaults to 60 seconds)."""
    count, _, period = text.partition("/")
    try:
        limit = int(count)
        seconds = float(period) if period else 60.0
    except ValueError:
        raise ValueError(f"expected N or N/SECONDS, got {text!r}") from None
    if limit < 0 or seconds <= 0:
        raise ValueError(f"rate limit needs N >= 0 and SECONDS > 0, got {text!r}")
    return limit, seconds
