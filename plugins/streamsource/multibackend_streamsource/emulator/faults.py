"""Injected faults for tests: latency, a rate of error answers, and scripted failures.

Faults apply to every API request (``/api/*`` and ``/health*``) after rate limiting and never to
the emulator's own control endpoints. A scripted failure answers the next ``count`` requests
matching ``method`` and ``path`` (an exact path or a shell-style pattern such as
``/api/v1/streams/*``) with ``status``. With ``after=True`` the request is processed first and
its answer replaced: the client sees an error although the change happened (an unknown outcome).
With ``disconnect=True`` the connection is closed without any answer instead (a client sees
a dropped connection). Error bodies are Rails' own (``{"status":500,"error":"Internal Server
Error"}`` when JSON is accepted) unless the rule gives one.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Sequence
from typing import Any

import attrs

__all__ = ["FaultRule", "Faults"]


def _status(inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 400 <= value <= 599:
        raise ValueError(f"fault status must be an HTTP error status 400..599 (got {value})")


def _upper(value: str | None) -> str | None:
    return None if value is None else value.upper()


@attrs.define(kw_only=True)
class FaultRule:
    """Answer the next ``count`` matching requests with ``status`` (see the module docstring)."""

    status: int = attrs.field(default=500, validator=_status)
    count: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    method: str | None = attrs.field(default=None, converter=_upper)
    path: str | None = None
    after: bool = False
    body: dict[str, Any] | None = None
    disconnect: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or path == self.path or fnmatch.fnmatchcase(path, self.path)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class Faults:
    """The current fault settings."""

    def __init__(self, *, seed: int | None = None) -> None:
        self.latency = 0.0
        self.error_rate = 0.0
        self.error_statuses: tuple[int, ...] = (500, 503)
        self.rules: list[FaultRule] = []
        self._random = random.Random(seed)

    def set(
        self,
        *,
        latency: float | None = None,
        error_rate: float | None = None,
        error_statuses: Sequence[int] | None = None,
    ) -> None:
        """Change latency (seconds added to every answer) and the random error rate (0..1)."""
        if latency is not None:
            if latency < 0:
                raise ValueError(f"latency must be >= 0 seconds (got {latency})")
            self.latency = float(latency)
        if error_rate is not None:
            if not 0.0 <= error_rate <= 1.0:
                raise ValueError(f"error_rate must be between 0 and 1 (got {error_rate})")
            self.error_rate = float(error_rate)
        if error_statuses is not None:
            statuses = tuple(int(s) for s in error_statuses)
            if not statuses:
                raise ValueError("error_statuses must name at least one status")
            for s in statuses:
                _status(None, None, s)  # type: ignore[arg-type]
            self.error_statuses = statuses

    def add(self, rule: FaultRule) -> None:
        """Queue a scripted failure (rules are consumed in the order they were added)."""
        self.rules.append(rule)

    def clear(self) -> None:
        """Remove every fault: no latency, no random errors, no scripted failures."""
        self.latency = 0.0
        self.error_rate = 0.0
        self.error_statuses = (500, 503)
        self.rules.clear()

    @property
    def active(self) -> bool:
        return bool(self.latency or self.error_rate or self.rules)

    def take(self, method: str, path: str) -> FaultRule | None:
        """The failure to inject into this request, if any (consuming one scripted use)."""
        for index, rule in enumerate(self.rules):
            if rule.matches(method, path):
                if rule.count <= 1:
                    del self.rules[index]
                else:
                    self.rules[index] = attrs.evolve(rule, count=rule.count - 1)
                return attrs.evolve(rule, count=1)
        if self.error_rate and self._random.random() < self.error_rate:
            return FaultRule(status=self._random.choice(self.error_statuses))
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "error_rate": self.error_rate,
            "error_statuses": list(self.error_statuses),
            "scripted": [rule.to_dict() for rule in self.rules],
        }
