"""Request parameters the way Rails builds them, and Ruby's casts of their values.

Rails merges the body's parameters with the query string's (the query wins) and the path's, and
parses the body only when a controller first reads ``params``; a malformed JSON body therefore
answers 400 only at that point (after authentication and the maintenance check). A JSON body
that is not an object lands under ``_json``. Bracketed keys (``status[]=a``, ``user[email]=x``)
in query strings and form bodies nest as Rails nests them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import parse_qsl

from aiohttp import web

from multibackend_streamsource.emulator.responses import ApiError

__all__ = [
    "FALSE_VALUES",
    "blank",
    "cast_boolean",
    "cast_string",
    "nest",
    "request_params",
    "ruby_to_i",
]

#: ActiveModel::Type::Boolean::FALSE_VALUES as strings and JSON scalars.
FALSE_VALUES: Final = frozenset({"0", "f", "F", "false", "FALSE", "off", "OFF"})

_TO_I: Final = re.compile(r"\s*([+-]?\d+)")
_BRACKET: Final = re.compile(r"\[([^\]]*)\]")
_PARAMS_KEY: Final[web.RequestKey[dict[str, Any]]] = web.RequestKey(
    "multibackend_emulator_params", dict
)


def blank(value: object) -> bool:
    """Ruby's ``blank?``: None, False, empty or whitespace-only strings, empty containers."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return not value or value.isspace()
    if isinstance(value, list | dict):
        return not value
    return False


def ruby_to_i(value: object) -> int:
    """Ruby's ``to_i`` as ActiveModel casts an id: leading digits of a string, else 0."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        match = _TO_I.match(value)
        return int(match.group(1)) if match else 0
    return 0


def cast_boolean(value: object) -> bool | None:
    """ActiveModel's boolean cast: "" is None, the Rails false values are False, else True."""
    if value is None or value == "":
        return None
    return not (value is False or value == 0 or (isinstance(value, str) and value in FALSE_VALUES))


def cast_string(value: object) -> str | None:
    """ActiveModel's string cast of a permitted scalar (true -> "t", 12 -> "12")."""
    if value is None or isinstance(value, str):
        return value
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value)


def nest(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest ``a[b]=c`` and ``a[]=c`` keys the way Rack parses query strings and forms."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head, *_BRACKET.findall("[" + rest)] if rest else [head]
        target: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                if isinstance(target, list):
                    target.append(value)
                elif isinstance(target, dict):
                    target[part] = value
                break
            following = parts[i + 1]
            if not isinstance(target, dict):
                break
            if following == "":
                child = target.get(part)
                if not isinstance(child, list):
                    child = target[part] = []
                target = child
            else:
                child = target.get(part)
                if not isinstance(child, dict):
                    child = target[part] = {}
                target = child
    return out


#: Ruby's JSON.parse (which Rails' JSON params parser calls) refuses nesting deeper than 100
#: arrays/objects (JSON::NestingError), and Rails answers 400 as for malformed JSON.
MAX_NESTING = 100


def _too_deep(data: Any) -> bool:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_NESTING:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return False


def has_lone_surrogates(raw: bytes, data: Any) -> bool:
    """Whether JSON ``data`` parsed from ``raw`` holds a lone UTF-16 surrogate (``"\\ud800"``,
    or its bytes: :func:`json.loads` lets both through). No UTF-8 text can hold one, so the body
    is malformed (400) rather than stored and then failing every answer that renders it."""
    if b"\\u" not in raw and b"\xed" not in raw:
        return False  # neither an escape nor a three-byte sequence that could encode one
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


async def _body_params(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError.rails(413) from None
    if not raw:
        return {}
    ctype = request.content_type
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ApiError.rails(400) from None
        if _too_deep(data) or has_lone_surrogates(raw, data):
            raise ApiError.rails(400)
        return data if isinstance(data, dict) else {"_json": data}
    if ctype == "application/x-www-form-urlencoded":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError.rails(400) from None
        return nest(parse_qsl(text, keep_blank_values=True))
    return {}


async def request_params(request: web.Request) -> dict[str, Any]:
    """The merged parameters of ``request`` (body, then query, then path), parsed once.

    Raises ApiError 400 for a malformed JSON body and 413 for a body over the size limit.
    """
    cached = request.get(_PARAMS_KEY)
    if isinstance(cached, dict):
        return cached
    params = await _body_params(request)
    if request.query_string:
        params.update(nest(parse_qsl(request.query_string, keep_blank_values=True)))
    params.update(request.match_info)
    request[_PARAMS_KEY] = params
    return params
