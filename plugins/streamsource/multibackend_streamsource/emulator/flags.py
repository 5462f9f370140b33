"""Feature flags as the server's Flipper setup evaluates them (contract §6).

A flag is on for everyone, for some groups and individual users (Flipper's actor gate, named
here ``user:EMAIL``), or off. Groups: ``editors`` (role exactly editor; admins are not in it),
``admins``, ``premium_users`` (= admins) and ``beta_users`` (nobody).
``maintenance_mode`` and ``location_validation`` are checked without an actor, so only "on for
everyone" turns them on. Unknown flags are refused when set (a typo should not pass silently).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import attrs

__all__ = ["FLAG_NAMES", "GROUPS", "SEEDED_DEFAULTS", "FlagSetting", "Flags"]

FLAG_NAMES: Final = (
    "stream_analytics",
    "stream_bulk_import",
    "stream_export",
    "stream_tags",
    "advanced_search",
    "maintenance_mode",
    "location_validation",
)

GROUPS: Final = {
    "editors": frozenset({"editor"}),
    "admins": frozenset({"admin"}),
    "premium_users": frozenset({"admin"}),
    "beta_users": frozenset[str](),
}


@attrs.frozen
class FlagSetting:
    """Who a flag is on for: everyone, or the members of ``groups`` and the ``users`` (emails)."""

    everyone: bool = False
    groups: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> FlagSetting:
        """Parse ``all``/``on``, ``off``, or a comma-separated list of group names and
        ``user:EMAIL`` entries (``editors,admins``, ``admins,user:ed@example.com``)."""
        value = text.strip()
        if value.lower() in ("all", "on", "true", "everyone"):
            return cls(everyone=True)
        if value.lower() in ("off", "none", "false", ""):
            return cls()
        entries = [e.strip() for e in value.split(",") if e.strip()]
        users = frozenset(e[5:].strip().lower() for e in entries if e.lower().startswith("user:"))
        groups = frozenset(e.lower() for e in entries if not e.lower().startswith("user:"))
        unknown = groups - GROUPS.keys()
        if unknown:
            raise ValueError(
                f"unknown flag group {sorted(unknown)[0]!r}: use all, off, user:EMAIL or groups "
                f"from {', '.join(GROUPS)}"
            )
        return cls(groups=groups, users=users)

    def enabled_for(self, role: str | None, email: str | None = None) -> bool:
        """True when on for an actor with ``role`` and ``email`` (None: no actor, as for the
        global checks)."""
        if self.everyone:
            return True
        if role is None:
            return False
        return email in self.users or any(role in GROUPS[g] for g in self.groups)

    def describe(self) -> str:
        if self.everyone:
            return "all"
        entries = sorted(self.groups) + [f"user:{u}" for u in sorted(self.users)]
        return ",".join(entries) if entries else "off"


SEEDED_DEFAULTS: Final[Mapping[str, FlagSetting]] = {
    "stream_analytics": FlagSetting(everyone=True),
    "stream_export": FlagSetting(everyone=True),
    "stream_bulk_import": FlagSetting(groups=frozenset({"editors"})),
    "stream_tags": FlagSetting(groups=frozenset({"admins"})),
    "advanced_search": FlagSetting(),
    "maintenance_mode": FlagSetting(),
    "location_validation": FlagSetting(),
}


def check_name(name: str) -> str:
    if name not in FLAG_NAMES:
        raise ValueError(f"unknown feature flag {name!r}: known flags are {', '.join(FLAG_NAMES)}")
    return name


class Flags:
    """The current flag settings (the seeded defaults unless changed)."""

    def __init__(self, settings: Mapping[str, FlagSetting] | None = None) -> None:
        self._settings: dict[str, FlagSetting] = dict(SEEDED_DEFAULTS)
        for name, setting in (settings or {}).items():
            self.set(name, setting)

    def set(self, name: str, setting: FlagSetting | str) -> FlagSetting:
        """Change flag ``name``; a string is parsed by :meth:`FlagSetting.parse`."""
        check_name(name)
        value = FlagSetting.parse(setting) if isinstance(setting, str) else setting
        self._settings[name] = value
        return value

    def enabled(self, name: str, role: str | None = None, email: str | None = None) -> bool:
        """True when flag ``name`` is on for an actor with ``role`` and ``email`` (None: a
        global check, without actor)."""
        setting = self._settings.get(name)
        return setting is not None and setting.enabled_for(role, email)

    def items(self) -> Iterable[tuple[str, FlagSetting]]:
        return self._settings.items()

    def describe(self) -> dict[str, str]:
        """Every flag's setting as text (``all``, ``off``, ``editors``...)."""
        return {name: setting.describe() for name, setting in self._settings.items()}
