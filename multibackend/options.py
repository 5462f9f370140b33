"""Binding plain option mappings (from TOML or keyword arguments) to a plugin's options class.

A plugin declares its options as a frozen attrs class, ``Options``, on its backend class. Each
attribute's annotation says what is accepted; attributes without a default are required::

    @attrs.frozen(kw_only=True)
    class Options:
        url: str
        pool_size: int = 5
        columns: dict[str, str] = attrs.field(factory=dict)

:func:`bind_options` checks a mapping against it and reports, with the key's full path, unknown
keys, missing required keys and values of the wrong type. Supported annotations: ``str``,
``int``, ``float`` (an int is accepted), ``bool``, ``list[X]``, ``dict[str, X]``, ``Any``,
``Literal[...]`` and unions of these (``X | None``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, get_args, get_origin

import attrs

from multibackend.errors import ConfigError

__all__ = ["bind_options", "option_names"]

OptionsT = TypeVar("OptionsT")


def option_names(options_cls: type[Any]) -> list[str]:
    """The option keys an options class accepts, in declaration order."""
    return [a.name for a in attrs.fields(options_cls)]


def bind_options(options_cls: type[OptionsT], raw: Mapping[str, Any], *, where: str) -> OptionsT:
    """Build ``options_cls`` from ``raw``; ``where`` is the key path prefix used in errors
    (``backends.legacy``). Validators of the class run too; their ValueError/TypeError become
    ConfigError naming the key."""
    hints = typing.get_type_hints(options_cls)
    fields = {a.name: a for a in attrs.fields(options_cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown option (accepted: {', '.join(fields) or 'none'})",
            key=f"{where}.{unknown[0]}",
        )
    for name, field in fields.items():
        key = f"{where}.{name}"
        if name not in raw:
            if field.default is attrs.NOTHING:
                raise ConfigError("is required", key=key)
            continue
        problem = _check(raw[name], hints.get(name, Any))
        if problem:
            raise ConfigError(f"expected {problem}, got {_describe(raw[name])}", key=key)
    try:
        return options_cls(**raw)
    except (ValueError, TypeError) as exc:
        # Validators name their option first ("timeout must be > 0"): make it the key, so the
        # error carries the full dotted path like every other option error; else the table's.
        text = str(exc)
        first = text.split(" ", 1)[0]
        raise ConfigError(text, key=f"{where}.{first}" if first in fields else where) from None


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(value: object, hint: Any) -> str | None:
    """Return None when ``value`` fits ``hint``, else a description of what was expected."""
    if hint is Any:
        return None
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if any(_check(value, opt) is None for opt in options):
            return None
        return " or ".join(_name(opt) for opt in options)
    if origin is typing.Literal:
        allowed = get_args(hint)
        return None if value in allowed else "one of " + ", ".join(repr(a) for a in allowed)
    if origin in (list, tuple, frozenset, set):
        if not isinstance(value, list | tuple):
            return _name(hint)
        (item_hint, *_) = get_args(hint) or (Any,)
        for item in value:
            if _check(item, item_hint) is not None:
                return _name(hint)
        return None
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            return _name(hint)
        _, value_hint = get_args(hint) or (str, Any)
        for k, v in value.items():
            if not isinstance(k, str) or _check(v, value_hint) is not None:
                return _name(hint)
        return None
    if hint is type(None):
        return None if value is None else "null"
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "a number"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if isinstance(hint, type):
        return None if isinstance(value, hint) else _name(hint)
    return None


def _name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if hint in names:
        return names[hint]
    origin = get_origin(hint)
    if origin in (list, tuple, frozenset, set):
        return "a list"
    if origin in (dict, Mapping):
        return "a table"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    return getattr(hint, "__name__", str(hint))
