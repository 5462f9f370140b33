"""Plugin discovery and loading: backends registered in the entry point group
``multibackend.backends``.

A plugin is a distribution that registers its backend class (a :class:`BaseBackend` subclass with
an ``Options`` attrs class) under an entry point name::

    [project.entry-points."multibackend.backends"]
    memory = "multibackend_memory:MemoryBackend"

Guarantees:

* one plugin failing to import never stops the others from loading; its formatted original
  traceback is kept (stevedore alone only logs it) and shown by :func:`available_plugins`, and
  :func:`plugin_class` raises :class:`PluginError` carrying it;
* a name registered by two distributions is reported (both are listed, neither is loaded), never
  silently resolved in favour of whichever comes first on ``sys.path``;
* an unknown name raises :class:`PluginError` listing the installed plugins.

Loading goes through stevedore's ``ExtensionManager`` (its failure callback, its loading), but the
entry points are enumerated with :mod:`importlib.metadata` on every call rather than read from
stevedore's on-disk cache: the registry needs the distribution of each entry point (stevedore's
cache drops it), and that cache can miss plugins installed moments ago (DESIGN.md §7).
"""

from __future__ import annotations

import importlib.metadata
import traceback
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Final

import attrs
from stevedore import ExtensionManager

from multibackend.backend import BaseBackend, Capability, StreamBackend
from multibackend.errors import PluginError
from multibackend.options import bind_options

__all__ = ["GROUP", "PluginInfo", "available_plugins", "load_backend", "plugin_class"]

#: The entry point group backends register in.
GROUP: Final = "multibackend.backends"


@attrs.frozen(kw_only=True)
class PluginInfo:
    """One registration in the ``multibackend.backends`` group, loaded or not.

    ``backend_class`` is None when the plugin could not be used; ``error`` then says why: the
    formatted original traceback of an import failure, a wrong entry point target, or the report
    of a name registered by several distributions.
    """

    name: str
    distribution: str | None
    version: str | None
    target: str
    backend_class: type[BaseBackend] | None
    error: str | None

    @property
    def ok(self) -> bool:
        """True when the plugin loaded and can build backends."""
        return self.backend_class is not None and self.error is None

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The capabilities the backend class announces (empty when the plugin failed)."""
        if self.backend_class is None:
            return frozenset()
        return frozenset(self.backend_class.capabilities)


class _LoadFailed(Exception):
    """Carries (as ``__cause__``) an import failure stevedore would not catch by itself."""


class _GuardedEntryPoint(importlib.metadata.EntryPoint):
    """An entry point whose loading failures all reach the failure callback.

    stevedore re-raises AssertionError (and never sees SystemExit), so a plugin asserting or
    exiting at import time would abort discovery of every other plugin.
    """

    def load(self) -> Any:
        try:
            return super().load()
        except (AssertionError, SystemExit) as exc:
            raise _LoadFailed(str(exc)) from exc


class _FreshExtensionManager(ExtensionManager):  # type: ignore[type-arg]
    """stevedore's manager over entry points we enumerated ourselves (see module docstring)."""

    def __init__(self, entry_points: list[importlib.metadata.EntryPoint], **kwargs: Any) -> None:
        self._given_entry_points: list[importlib.metadata.EntryPoint] = [
            _GuardedEntryPoint(ep.name, ep.value, ep.group) for ep in entry_points
        ]
        super().__init__(GROUP, **kwargs)

    def list_entry_points(self) -> list[importlib.metadata.EntryPoint]:
        return self._given_entry_points


def _dist_of(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.name, dist.version


def _format_failure(exc: BaseException) -> str:
    original = exc.__cause__ if isinstance(exc, _LoadFailed) and exc.__cause__ else exc
    return "".join(traceback.format_exception(original)).rstrip()


def _check_class(obj: object, target: str) -> str | None:
    """Why ``obj`` cannot serve as a backend class, or None when it can."""
    if not (isinstance(obj, type) and issubclass(obj, BaseBackend)):
        return (
            f"entry point target {target!r} is {obj!r}, not a subclass of "
            "multibackend.backend.BaseBackend"
        )
    options = getattr(obj, "Options", None)
    if not (isinstance(options, type) and attrs.has(options)):
        return (
            f"backend class {obj.__qualname__} ({target}) has no 'Options' attrs class "
            "(declare one, even an empty one)"
        )
    return None


def _duplicate_report(name: str, eps: Iterable[importlib.metadata.EntryPoint]) -> str:
    owners = []
    for ep in eps:
        dist, version = _dist_of(ep)
        owners.append(f"{dist or '?'} {version or '?'} ({ep.value})")
    return (
        f"plugin {name!r} is registered by several distributions: {'; '.join(owners)}; "
        "uninstall all but one of them"
    )


def _registrations() -> dict[str, list[importlib.metadata.EntryPoint]]:
    by_name: dict[str, list[importlib.metadata.EntryPoint]] = defaultdict(list)
    for ep in importlib.metadata.entry_points(group=GROUP):
        by_name[ep.name].append(ep)
    return by_name


def _scan(only: str | None = None) -> list[PluginInfo]:
    """Describe the registrations (only those named ``only`` when given), loading each plugin
    registered once; plugins registered several times are reported and not imported."""
    infos: list[PluginInfo] = []
    unique: list[importlib.metadata.EntryPoint] = []
    for name, eps in _registrations().items():
        if only is not None and name != only:
            continue
        if len(eps) == 1:
            unique.append(eps[0])
            continue
        report = _duplicate_report(name, eps)
        for ep in eps:
            dist, version = _dist_of(ep)
            infos.append(
                PluginInfo(
                    name=name,
                    distribution=dist,
                    version=version,
                    target=ep.value,
                    backend_class=None,
                    error=report,
                )
            )

    failures: dict[str, BaseException] = {}

    def on_failure(_manager: Any, ep: importlib.metadata.EntryPoint, exc: BaseException) -> None:
        failures[ep.name] = exc

    manager = _FreshExtensionManager(unique, on_load_failure_callback=on_failure)
    loaded = {ext.name: ext.plugin for ext in manager.extensions}
    for ep in unique:
        dist, version = _dist_of(ep)
        error: str | None
        cls: type[BaseBackend] | None = None
        if ep.name in failures:
            error = _format_failure(failures[ep.name])
        else:
            obj = loaded[ep.name]
            error = _check_class(obj, ep.value)
            if error is None:
                cls = obj
        infos.append(
            PluginInfo(
                name=ep.name,
                distribution=dist,
                version=version,
                target=ep.value,
                backend_class=cls,
                error=error,
            )
        )
    infos.sort(key=lambda i: (i.name, i.distribution or ""))
    return infos


def available_plugins() -> list[PluginInfo]:
    """Every registered plugin, sorted by name, including those that failed to load.

    Each call enumerates the installed distributions afresh, so plugins installed while the
    process runs are seen (after ``importlib.invalidate_caches()`` when installed moments ago).
    """
    return _scan()


def plugin_class(plugin: str) -> type[BaseBackend]:
    """The backend class registered as ``plugin``.

    Raises PluginError when no plugin has that name (the message lists the installed ones), when
    it failed to import (``.traceback`` holds the original traceback) or is not a usable backend
    class, or when several distributions register the name (the message names them).
    """
    # Only the requested plugin is imported: an unrelated broken one cannot get in the way.
    matches = _scan(only=plugin)
    if not matches:
        installed = sorted(_registrations())
        raise PluginError(
            f"{plugin!r} is not an installed plugin (installed: {', '.join(installed) or 'none'})",
            plugin=plugin,
        )
    if len(matches) > 1:
        raise PluginError(matches[0].error or f"plugin {plugin!r} is ambiguous", plugin=plugin)
    info = matches[0]
    if info.backend_class is None:
        where = f" from {info.distribution} {info.version}" if info.distribution else ""
        last = (info.error or "").strip().splitlines()[-1:] or ["unknown error"]
        raise PluginError(
            f"plugin {plugin!r}{where} failed to load ({info.target}): {last[0]}",
            plugin=plugin,
            traceback=info.error,
        )
    return info.backend_class


def load_backend(plugin: str, *, name: str | None = None, **options: Any) -> StreamBackend:
    """Build a backend from plugin ``plugin``, configured as ``name`` (default: the plugin name).

    ``options`` are checked against the plugin's ``Options`` class; a problem raises ConfigError
    naming the key (``backends.<name>.<option>``). The backend is returned unopened.
    """
    cls = plugin_class(plugin)
    backend_name = plugin if name is None else name
    bound = bind_options(cls.Options, options, where=f"backends.{backend_name}")  # type: ignore[attr-defined]
    backend: StreamBackend = cls(backend_name, bound)  # type: ignore[call-arg]
    return backend
