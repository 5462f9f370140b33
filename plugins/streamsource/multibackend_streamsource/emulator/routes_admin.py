"""The emulator's control endpoint, under ``/__emulator__`` (a path the real API does not use).

For tests and demos only: it is not protected in any way, so never expose an emulator beyond
loopback. Requests here are neither rate limited, nor faulted, nor counted. Errors answer
``{"error": "..."}`` with 400 (bad body), 404 (unknown user or stream) or 422 (bad value).

    GET    /__emulator__                      everything switchable, users, counters
    POST   /__emulator__/reset                forget data; faults, flags, counters to defaults
    GET    /__emulator__/counters             requests, throttled, faults, errors, statuses
    POST   /__emulator__/users                {"email","password","role"?,"service_account"?}
    PATCH  /__emulator__/users/{email}        {"role"?,"password"?,"service_account"?}
    DELETE /__emulator__/users/{email}
    POST   /__emulator__/users/{email}/token  a token without logging in
    PUT    /__emulator__/flags                {"<flag>": "all|editors|admins|off", ...}
    PUT    /__emulator__/faults               {"latency"?,"error_rate"?,"error_statuses"?}
    POST   /__emulator__/faults/next          {"count"?,"status"?,"method"?,"path"?,"after"?,
                                               "body"?,"disconnect"?}
    DELETE /__emulator__/faults
    PUT    /__emulator__/rate_limit           {"limit","period"?,"localhost_exempt"?}
    PUT    /__emulator__/settings             {"signup_500"?,"ready_error"?}
    POST   /__emulator__/known_cities         {"city","state"?}
    GET    /__emulator__/streams              every stream with its hidden columns
    PUT    /__emulator__/streams/{id}/archive  archive; DELETE unarchives
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from aiohttp import web

from multibackend_streamsource.emulator.control import EmulatorControl
from multibackend_streamsource.emulator.params import has_lone_surrogates
from multibackend_streamsource.emulator.responses import ApiError, json_response
from multibackend_streamsource.emulator.state import STATE

__all__ = ["PREFIX", "routes"]

PREFIX = "/__emulator__"


def _control(request: web.Request) -> EmulatorControl:
    return EmulatorControl(request.app[STATE])


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(400, {"error": "body is not valid JSON"}) from None
    if has_lone_surrogates(raw, data):
        raise ApiError(400, {"error": "body is not valid UTF-8 JSON"})
    if not isinstance(data, dict):
        raise ApiError(400, {"error": "body must be a JSON object"})
    return data


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except KeyError as exc:
        raise ApiError(404, {"error": str(exc.args[0])}) from None
    except (TypeError, ValueError) as exc:
        raise ApiError(422, {"error": str(exc)}) from None


async def _acall(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await fn(*args, **kwargs)
    except KeyError as exc:
        raise ApiError(404, {"error": str(exc.args[0])}) from None
    except (TypeError, ValueError) as exc:
        raise ApiError(422, {"error": str(exc)}) from None


async def describe(request: web.Request) -> web.Response:
    return json_response(_control(request).describe())


async def reset(request: web.Request) -> web.Response:
    await _control(request).reset()
    return web.Response(status=204)


async def counters(request: web.Request) -> web.Response:
    return json_response(attrs.asdict(_control(request).counters()))


async def add_user(request: web.Request) -> web.Response:
    body = await _body(request)
    user = await _acall(_control(request).add_user, **body)
    return json_response(attrs.asdict(user), status=201)


async def update_user(request: web.Request) -> web.Response:
    body = await _body(request)
    user = await _acall(_control(request).update_user, request.match_info["email"], **body)
    return json_response(attrs.asdict(user))


async def remove_user(request: web.Request) -> web.Response:
    await _acall(_control(request).remove_user, request.match_info["email"])
    return web.Response(status=204)


async def token(request: web.Request) -> web.Response:
    value = _call(_control(request).token_for, request.match_info["email"])
    return json_response({"token": value})


async def set_flags(request: web.Request) -> web.Response:
    body = await _body(request)
    control = _control(request)
    await _acall(control.set_flags, body)
    return json_response(control.flags())


async def set_faults(request: web.Request) -> web.Response:
    body = await _body(request)
    control = _control(request)
    _call(control.set_faults, **body)
    return json_response(control.faults())


async def fail_next(request: web.Request) -> web.Response:
    body = await _body(request)
    control = _control(request)
    _call(control.fail_next, **body)
    return json_response(control.faults(), status=201)


async def clear_faults(request: web.Request) -> web.Response:
    _control(request).clear_faults()
    return web.Response(status=204)


async def set_rate_limit(request: web.Request) -> web.Response:
    body = await _body(request)
    control = _control(request)
    _call(control.set_rate_limit, **body)
    return json_response(control.describe()["rate_limit"])


async def settings(request: web.Request) -> web.Response:
    body = await _body(request)
    control = _control(request)
    unknown = set(body) - {"signup_500", "ready_error"}
    if unknown:
        raise ApiError(422, {"error": f"unknown setting {sorted(unknown)[0]!r}"})
    if "signup_500" in body:
        control.set_signup_500(bool(body["signup_500"]))
    if "ready_error" in body:
        control.set_ready(body["ready_error"])
    described = control.describe()
    return json_response({k: described[k] for k in ("signup_500", "ready_error")})


async def known_city(request: web.Request) -> web.Response:
    body = await _body(request)
    _call(_control(request).add_known_city, **body)
    return web.Response(status=204)


async def streams(request: web.Request) -> web.Response:
    return json_response({"streams": _control(request).streams()})


def _stream_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise ApiError(404, {"error": "no such stream"}) from None


async def archive(request: web.Request) -> web.Response:
    control = _control(request)
    sid = _stream_id(request)
    await _acall(control.archive_stream, sid, request.method == "PUT")
    return json_response({"stream": control.stream(sid)})


def routes() -> list[web.RouteDef]:
    p = PREFIX
    return [
        web.get(p, describe),
        web.post(f"{p}/reset", reset),
        web.get(f"{p}/counters", counters),
        web.post(f"{p}/users", add_user),
        web.patch(f"{p}/users/{{email}}", update_user),
        web.delete(f"{p}/users/{{email}}", remove_user),
        web.post(f"{p}/users/{{email}}/token", token),
        web.put(f"{p}/flags", set_flags),
        web.put(f"{p}/faults", set_faults),
        web.post(f"{p}/faults/next", fail_next),
        web.delete(f"{p}/faults", clear_faults),
        web.put(f"{p}/rate_limit", set_rate_limit),
        web.put(f"{p}/settings", settings),
        web.post(f"{p}/known_cities", known_city),
        web.get(f"{p}/streams", streams),
        web.put(f"{p}/streams/{{id}}/archive", archive),
        web.delete(f"{p}/streams/{{id}}/archive", archive),
    ]
