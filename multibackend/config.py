"""Configuration files: TOML in, frozen attrs settings out, every mistake named by its key path.

A configuration file looks like this (``docs/configuration.md`` is the reference)::

    [backends.legacy]              # one table per backend; the table's key is the backend's name
    plugin = "sql"                 # the entry point name; every other key is the plugin's option
    url = "sqlite+aiosqlite:///legacy.db"

    [manager]
    primary = "legacy"
    secondaries = ["streamsource"]

    [journal]
    url = "sqlite+aiosqlite:///journal.db"

Rules every file follows:

* String values may use ``${VAR}`` (the variable must be set) and ``${VAR:-default}`` (the
  default when unset or empty); ``$$`` is a literal ``$``. Values taken from the environment
  never appear in error messages.
* Relative SQLite paths in URLs (``sqlite+aiosqlite:///journal.db``) resolve against the
  folder of the configuration file (the working directory for a mapping), so a configuration
  means the same thing from wherever it is run. So do plugin options declared with
  ``metadata=PATH_OPTION``.
* Unknown sections, unknown keys and values of the wrong type are errors, raised as
  :class:`~multibackend.errors.ConfigError` whose message starts with the dotted key path.

Adding a section (later issues add ``[shadow]``, ``[cutover]``) is one frozen attrs class
decorated with :func:`section`; its annotations say what is accepted (see
:func:`multibackend.options.bind_options`), attributes without default are required, and an
optional ``finish(self, ctx)`` method checks references and resolves paths.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import attrs

from multibackend.backend import StreamBackend
from multibackend.errors import ConfigError, PluginError
from multibackend.options import bind_options
from multibackend.registry import PluginInfo, available_plugins, load_backend, plugin_class

__all__ = [
    "PATH_OPTION",
    "BackendSettings",
    "Config",
    "CutoverSettings",
    "JournalSettings",
    "LoadContext",
    "ManagerSettings",
    "ShadowSettings",
    "SyncSettings",
    "accepted_keys",
    "build_backends",
    "load_config",
    "resolve_sqlite_url",
    "section",
    "sections",
]

#: Metadata for a plugin option that holds a file path: ``attrs.field(metadata=PATH_OPTION)``.
#: A relative path in such an option resolves against the configuration file's folder.
PATH_OPTION: Final[Mapping[str, Any]] = {"multibackend.path": True}

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VAR_RE: Final = re.compile(r"\$\$|\$\{([^}:]*)(?::-([^}]*))?\}")
_VAR_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SQLITE_RE: Final = re.compile(r"^(sqlite(?:\+\w+)?):///(?!/)(?!:memory:)([^?]+)(\?.*)?$")
_SECRET_HINTS: Final = ("password", "secret", "token", "passwd", "api_key", "apikey", "credential")


# --- section registry -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class LoadContext:
    """What a section's ``finish`` hook may consult: the configuration's folder and the names
    of the configured backends."""

    base_dir: Path
    backend_names: frozenset[str]


S = TypeVar("S")
_SECTIONS: dict[str, type[Any]] = {}


def section(name: str) -> Callable[[type[S]], type[S]]:
    """Register a frozen attrs class as the settings of the optional section ``[name]``.

    The class may define ``finish(self, ctx: LoadContext) -> Self`` to check cross-references
    (raise ConfigError with ``key``) and to resolve relative paths.
    """

    def register(cls: type[S]) -> type[S]:
        if name in _SECTIONS or name == "backends":
            raise ValueError(f"configuration section [{name}] is already registered")
        cls.section_name = name  # type: ignore[attr-defined]
        _SECTIONS[name] = cls
        return cls

    return register


def sections() -> dict[str, type[Any]]:
    """The registered optional sections by name, in registration order."""
    return dict(_SECTIONS)


def accepted_keys() -> list[str]:
    """Every key path the core accepts, dotted: ``backends.<name>.plugin``, ``manager.primary``,
    ... (plugin options come from the plugins' ``Options`` classes)."""
    keys = ["backends.<name>.plugin"]
    for name, cls in _SECTIONS.items():
        keys.extend(f"{name}.{a.name}" for a in attrs.fields(cls))
    return keys


def _key(inst: object, attribute: attrs.Attribute[Any]) -> str:
    return f"{getattr(type(inst), 'section_name', type(inst).__name__)}.{attribute.name}"


def _positive(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value <= 0:
        raise ConfigError(f"must be greater than 0 (got {value!r})", key=_key(inst, attribute))


def _not_negative(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value < 0:
        raise ConfigError(f"must be 0 or more (got {value!r})", key=_key(inst, attribute))


def _to_tuple(value: Any) -> tuple[str, ...]:
    return tuple(value)


# --- core sections ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class BackendSettings:
    """One ``[backends.NAME]`` table: the plugin and its options (as written, after
    interpolation and path resolution; ``repr`` hides them because they may hold secrets)."""

    name: str
    plugin: str
    options: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


@section("manager")
@attrs.frozen(kw_only=True)
class ManagerSettings:
    """``[manager]``: which backend is primary, which receive the fan-out, and how."""

    primary: str
    secondaries: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    on_secondary_failure: Literal["journal", "inline", "fail"] = "journal"
    read_from: str = "primary"
    worker: Literal["embedded", "external"] = "embedded"

    def finish(self, ctx: LoadContext) -> ManagerSettings:
        known = ", ".join(sorted(ctx.backend_names))
        if self.primary not in ctx.backend_names:
            raise ConfigError(
                f"{self.primary!r} is not a configured backend (configured: {known})",
                key="manager.primary",
            )
        seen: set[str] = set()
        for secondary in self.secondaries:
            if secondary not in ctx.backend_names:
                raise ConfigError(
                    f"{secondary!r} is not a configured backend (configured: {known})",
                    key="manager.secondaries",
                )
            if secondary == self.primary:
                raise ConfigError(
                    f"{secondary!r} is the primary; a backend cannot also be a secondary",
                    key="manager.secondaries",
                )
            if secondary in seen:
                raise ConfigError(f"{secondary!r} is listed twice", key="manager.secondaries")
            seen.add(secondary)
        if self.read_from != "primary" and self.read_from not in ctx.backend_names:
            raise ConfigError(
                f"expected 'primary' or a configured backend ({known}), got {self.read_from!r}",
                key="manager.read_from",
            )
        return self


@section("journal")
@attrs.frozen(kw_only=True)
class JournalSettings:
    """``[journal]``: where the sync journal lives (an SQLAlchemy async URL)."""

    url: str = "sqlite+aiosqlite:///journal.db"

    def finish(self, ctx: LoadContext) -> JournalSettings:
        if not self.url.strip():
            raise ConfigError("must not be empty", key="journal.url")
        return attrs.evolve(self, url=resolve_sqlite_url(self.url, ctx.base_dir))


@section("sync")
@attrs.frozen(kw_only=True)
class SyncSettings:
    """``[sync]``: how the worker retries and batches fan-out work."""

    max_attempts: int = attrs.field(default=12, validator=_positive)
    backoff_base: float = attrs.field(default=1.0, validator=_positive)
    backoff_cap: float = attrs.field(default=300.0, validator=_positive)
    batch_size: int = attrs.field(default=200, validator=_positive)
    # Seconds; 0 disables. The default is multibackend.journal.worker.EMBEDDED_LINGER (not
    # imported: loading the configuration should not load the journal and SQLAlchemy).
    linger: float = attrs.field(default=0.05, validator=_not_negative)

    def finish(self, ctx: LoadContext) -> SyncSettings:
        if self.backoff_cap < self.backoff_base:
            raise ConfigError(
                f"must be at least backoff_base ({self.backoff_base}), got {self.backoff_cap}",
                key="sync.backoff_cap",
            )
        return self


def _share(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"must be between 0 and 1 (got {value!r})", key=_key(inst, attribute))


@section("shadow")
@attrs.frozen(kw_only=True)
class ShadowSettings:
    """``[shadow]``: repeat a sampled share of reads on a candidate backend and compare."""

    backend: str | None = None
    sample: float = attrs.field(default=0.1, validator=_share)
    timeout: float = attrs.field(default=0.5, validator=_positive)

    def finish(self, ctx: LoadContext) -> ShadowSettings:
        if self.backend is not None and self.backend not in ctx.backend_names:
            known = ", ".join(sorted(ctx.backend_names))
            raise ConfigError(
                f"{self.backend!r} is not a configured backend (configured: {known})",
                key="shadow.backend",
            )
        return self


@section("cutover")
@attrs.frozen(kw_only=True)
class CutoverSettings:
    """``[cutover]``: which backend is the legacy one and which the new one, and the limits the
    cutover's steps check (the defaults take them from ``[manager]``)."""

    legacy: str | None = None
    new: str | None = None
    fence_timeout: float = attrs.field(default=30.0, validator=_positive)
    fence_grace: float = attrs.field(default=0.5, validator=_positive)
    max_shadow_mismatch_rate: float = attrs.field(default=0.001, validator=_share)
    min_shadow_reads: int = attrs.field(default=100, validator=_positive)

    def finish(self, ctx: LoadContext) -> CutoverSettings:
        for key, value in (("cutover.legacy", self.legacy), ("cutover.new", self.new)):
            if value is not None and value not in ctx.backend_names:
                known = ", ".join(sorted(ctx.backend_names))
                raise ConfigError(
                    f"{value!r} is not a configured backend (configured: {known})", key=key
                )
        if self.legacy is not None and self.legacy == self.new:
            raise ConfigError("legacy and new must be different backends", key="cutover.new")
        return self


@attrs.frozen(kw_only=True)
class Config:
    """A loaded configuration. ``sections`` holds every optional section that was present or
    has defaults; use the typed properties (``manager`` is None when ``[manager]`` is absent)."""

    path: Path | None
    base_dir: Path
    backends: Mapping[str, BackendSettings]
    sections: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def manager(self) -> ManagerSettings | None:
        value: ManagerSettings | None = self.sections.get("manager")
        return value

    @property
    def journal(self) -> JournalSettings:
        value: JournalSettings = self.sections["journal"]
        return value

    @property
    def sync(self) -> SyncSettings:
        value: SyncSettings = self.sections["sync"]
        return value

    def section(self, name: str) -> Any:
        """The settings of section ``name``, or None when it is absent and has required keys."""
        return self.sections.get(name)


# --- loading ----------------------------------------------------------------------------------


def load_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> Config:
    """Read a configuration file (or an already parsed mapping) and check all of it.

    Every backend's options are checked against its plugin's ``Options`` class, so an unknown
    plugin or option fails here, before anything is opened. Raises ConfigError.
    """
    if isinstance(source, Mapping):
        path: Path | None = None
        base_dir = Path.cwd()
        raw: Mapping[str, Any] = source
    else:
        path = Path(source)
        base_dir = path.resolve().parent
        raw = _read_toml(path)
    interpolated, from_env = _interpolate(raw, "")
    try:
        backends = _load_backends(interpolated, base_dir)
        ctx = LoadContext(base_dir=base_dir, backend_names=frozenset(backends))
        loaded = _load_sections(interpolated, ctx)
    except ConfigError as exc:
        raise _redact(exc, interpolated, from_env) from None
    return Config(path=path, base_dir=base_dir, backends=backends, sections=loaded)


def build_backends(config: Config) -> dict[str, StreamBackend]:
    """Instantiate every configured backend (not opened), by name, through the registry."""
    return {
        name: load_backend(settings.plugin, name=name, **settings.options)
        for name, settings in config.backends.items()
    }


def resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """Make the path of a relative SQLite URL absolute against ``base_dir``; other URLs (and
    absolute or in-memory SQLite URLs) are returned unchanged."""
    match = _SQLITE_RE.match(url)
    if not match:
        return url
    scheme, rel, query = match.groups()
    return f"{scheme}:///{(base_dir / rel).resolve()}{query or ''}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's message ends with "(at line N, column M)"; put the line up front.
        text = str(exc)
        line = re.search(r"line (\d+)", text)
        where = f"{path}:{line.group(1)}" if line else str(path)
        raise ConfigError(f"{where}: invalid TOML: {text}") from None


def _interpolate(value: Any, key: str) -> tuple[Any, dict[str, str]]:
    """Expand ``${VAR}`` in every string; return the value and {key path: variable} for keys
    whose value came (in part) from the environment."""
    from_env: dict[str, str] = {}

    def walk(item: Any, path: str) -> Any:
        if isinstance(item, str):
            return _expand(item, path, from_env)
        if isinstance(item, Mapping):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, path) for v in item]
        return item

    return walk(value, key), from_env


def _expand(text: str, key: str, from_env: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        var, default = match.group(1), match.group(2)
        if not _VAR_NAME_RE.match(var):
            raise ConfigError(
                f"{match.group(0)!r} is not a valid variable reference "
                "(expected ${NAME} or ${NAME:-default})",
                key=key,
            )
        from_env[key] = var
        value = os.environ.get(var)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"environment variable {var} is not set "
                    f"(set it, or give a default with ${{{var}:-default}})",
                    key=key,
                )
            return default
        return value

    return _VAR_RE.sub(replace, text)


def _redact(exc: ConfigError, raw: Mapping[str, Any], from_env: dict[str, str]) -> ConfigError:
    """Replace a value echoed in ``exc`` when it came from the environment or sits under a key
    whose name suggests a secret."""
    key = exc.key or ""
    if not key:
        return exc
    last = key.rsplit(".", 1)[-1].lower()
    secret = any(hint in last for hint in _SECRET_HINTS)
    if key not in from_env and not secret:
        return exc
    value: Any = raw
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return exc
    text = repr(value)
    shown = text if len(text) <= 60 else text[:57] + "..."
    hidden = f"the value of ${{{from_env[key]}}}" if key in from_env else "<redacted>"
    message = exc.message.replace(shown, hidden)
    if isinstance(value, str) and value:
        message = message.replace(value, hidden)
    redacted = ConfigError(message)
    redacted.key = exc.key
    return redacted


def _load_backends(raw: Mapping[str, Any], base_dir: Path) -> dict[str, BackendSettings]:
    unknown = sorted(set(raw) - {"backends", *_SECTIONS})
    if unknown:
        accepted = ", ".join(["backends", *_SECTIONS])
        raise ConfigError(f"unknown section (accepted: {accepted})", key=unknown[0])
    tables = raw.get("backends")
    if tables is None:
        raise ConfigError(
            "no backends configured: add a [backends.NAME] table with a plugin key",
            key="backends",
        )
    if not isinstance(tables, Mapping):
        raise ConfigError("expected a table of [backends.NAME] tables", key="backends")
    if not tables:
        raise ConfigError(
            "no backends configured: add a [backends.NAME] table with a plugin key",
            key="backends",
        )
    # One scan of the entry points for the whole file (each scan imports every plugin).
    infos = available_plugins()
    result: dict[str, BackendSettings] = {}
    for name, table in tables.items():
        where = f"backends.{name}"
        if not _NAME_RE.match(name):
            raise ConfigError(
                "a backend name uses letters, digits, '_', '-' and '.', starting with a "
                "letter or digit",
                key=where,
            )
        if not isinstance(table, Mapping):
            raise ConfigError("expected a table with a plugin key", key=where)
        result[name] = _load_backend(name, table, base_dir, infos)
    return result


def _load_backend(
    name: str, table: Mapping[str, Any], base_dir: Path, infos: Sequence[PluginInfo]
) -> BackendSettings:
    where = f"backends.{name}"
    plugin = table.get("plugin")
    installed = ", ".join(sorted({info.name for info in infos})) or "none"
    if plugin is None:
        raise ConfigError(
            f"is required: the name of the plugin (installed: {installed})", key=f"{where}.plugin"
        )
    if not isinstance(plugin, str):
        raise ConfigError(
            f"expected a string (installed: {installed}), got {plugin!r}", key=f"{where}.plugin"
        )
    if plugin not in {info.name for info in infos}:
        raise ConfigError(
            f"{plugin!r} is not an installed plugin (installed: {installed})",
            key=f"{where}.plugin",
        )
    usable = [i for i in infos if i.name == plugin]
    try:
        if len(usable) == 1 and usable[0].ok and usable[0].backend_class is not None:
            cls: type[Any] = usable[0].backend_class
        else:
            cls = plugin_class(plugin)  # raises PluginError saying why it cannot be used
    except PluginError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "failed to load"
        raise ConfigError(
            f"plugin {plugin!r} cannot be used: {first} (run `multibackend plugins` for details)",
            key=f"{where}.plugin",
        ) from None
    options = {k: v for k, v in table.items() if k != "plugin"}
    options_cls = getattr(cls, "Options", None)
    if options_cls is not None:
        options = _resolve_paths(options_cls, options, base_dir)
        bind_options(options_cls, options, where=where)
    elif options:
        raise ConfigError(
            f"unknown option (plugin {plugin!r} takes no options)",
            key=f"{where}.{sorted(options)[0]}",
        )
    return BackendSettings(name=name, plugin=plugin, options=options)


def _resolve_paths(
    options_cls: type[Any], options: dict[str, Any], base_dir: Path
) -> dict[str, Any]:
    resolved = dict(options)
    fields = {a.name: a for a in attrs.fields(options_cls)} if attrs.has(options_cls) else {}
    for key, value in options.items():
        if not isinstance(value, str):
            continue
        field = fields.get(key)
        if field is not None and field.metadata.get("multibackend.path") and value:
            resolved[key] = str((base_dir / Path(value).expanduser()).resolve())
        else:
            resolved[key] = resolve_sqlite_url(value, base_dir)
    return resolved


def _load_sections(raw: Mapping[str, Any], ctx: LoadContext) -> dict[str, Any]:
    loaded: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name)
        if table is None:
            if any(a.default is attrs.NOTHING for a in attrs.fields(cls)):
                continue  # a section with required keys is simply absent
            table = {}
        elif not isinstance(table, Mapping):
            raise ConfigError(f"expected a table ([{name}])", key=name)
        settings = bind_options(cls, table, where=name)
        finish = getattr(settings, "finish", None)
        if finish is not None:
            settings = finish(ctx)
        loaded[name] = settings
    return loaded
