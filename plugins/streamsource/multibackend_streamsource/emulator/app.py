"""The aiohttp application: routes and the request pipeline around them.

For every API request, in order (the control endpoint skips all of it):

0. CORS (outermost, like Rack::Cors): preflights answered here, headers added to answers;
1. rate limiting (Rack::Attack sits in front of Rails, so it counts every path, /health and
   unknown routes included) -> 429;
2. injected faults: latency, then a scripted or random failure (before or after the handler);
3. the handler; its ApiError becomes the documented body, an invalid enum value and any
   unexpected exception a Rails 500, an unknown route or method a Rails 404;
4. counting the answer by status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from multibackend_streamsource.emulator import (
    routes_admin,
    routes_auth,
    routes_features,
    routes_health,
    routes_streams,
)
from multibackend_streamsource.emulator.cors import (
    add_cors_headers,
    is_preflight,
    preflight_response,
)
from multibackend_streamsource.emulator.faults import FaultRule
from multibackend_streamsource.emulator.responses import (
    TOO_MANY,
    ApiError,
    json_response,
    rails_error_response,
)
from multibackend_streamsource.emulator.rules import EnumValueError
from multibackend_streamsource.emulator.state import STATE, EmulatorState

__all__ = ["DEFAULT_MAX_BODY", "build_app"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _fault_response(request: web.Request, rule: FaultRule) -> web.StreamResponse:
    if rule.body is not None:
        return json_response(rule.body, status=rule.status)
    return rails_error_response(request, rule.status)


async def _handle(
    request: web.Request, handler: Handler, state: EmulatorState
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response(request)
    except EnumValueError:
        return rails_error_response(request, 500)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return rails_error_response(request, 404)
    except web.HTTPException as exc:
        return rails_error_response(request, exc.status)
    except Exception:
        state.errors += 1
        log.exception("emulator: unexpected error answering %s %s", request.method, request.path)
        return rails_error_response(request, 500)


def _inject(request: web.Request, rule: FaultRule, state: EmulatorState) -> web.StreamResponse:
    state.fault_count += 1
    if rule.disconnect:
        # Close the connection without an answer; the response below is never written.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=rule.status)
    response = _fault_response(request, rule)
    state.statuses[response.status] += 1
    return response


async def _api(request: web.Request, handler: Handler, state: EmulatorState) -> web.StreamResponse:
    state.requests += 1
    throttled = state.limiter.hit(request.remote)
    if throttled is not None:
        state.throttled += 1
        state.statuses[429] += 1
        return json_response(
            TOO_MANY,
            status=429,
            headers={
                "X-RateLimit-Limit": str(throttled.limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(throttled.reset),
            },
        )
    rule = None
    faults = state.faults
    if faults.active:
        if faults.latency:
            await asyncio.sleep(faults.latency)
        rule = faults.take(request.method, request.path)
        if rule is not None and not rule.after:
            return _inject(request, rule, state)
    response = await _handle(request, handler, state)
    if rule is not None:
        return _inject(request, rule, state)
    state.statuses[response.status] += 1
    return response


@web.middleware
async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    if request.path.startswith(routes_admin.PREFIX):
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return json_response({"error": "unknown emulator control endpoint"}, status=404)
    if "Origin" not in request.headers:
        return await _api(request, handler, state)
    if is_preflight(request):
        return preflight_response(request)
    response = await _api(request, handler, state)
    add_cors_headers(response)
    return response


def build_app(state: EmulatorState, *, max_body: int = DEFAULT_MAX_BODY) -> web.Application:
    """The emulator's application over ``state``; bodies over ``max_body`` bytes answer 413."""
    app = web.Application(client_max_size=max_body, middlewares=[pipeline])
    app[STATE] = state
    # Collection routes before member routes, as Rails draws them.
    app.router.add_routes(routes_features.routes())
    app.router.add_routes(routes_streams.routes())
    app.router.add_routes(routes_auth.routes())
    app.router.add_routes(routes_health.routes())
    app.router.add_routes(routes_admin.routes())
    return app
