"""CORS as the server's Rack::Cors setup answers it (contract §1.0).

Any origin, any request header, methods GET/POST/PUT/PATCH/DELETE/OPTIONS/HEAD, and the
``Authorization`` header exposed. Rack::Cors is the outermost middleware, so preflights are
answered before rate limiting, and throttled answers carry the CORS headers too.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

__all__ = ["add_cors_headers", "is_preflight", "preflight_response"]

_METHODS: Final = "GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD"


def is_preflight(request: web.BaseRequest) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def preflight_response(request: web.BaseRequest) -> web.Response:
    """200, empty, allowing the requested method and headers."""
    response = web.Response(status=200)
    add_cors_headers(response)
    requested = request.headers.get("Access-Control-Request-Headers")
    if requested:
        response.headers["Access-Control-Allow-Headers"] = requested
    return response


def add_cors_headers(response: web.StreamResponse) -> None:
    """The headers Rack::Cors adds to an answer to a request with an ``Origin``."""
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Methods"] = _METHODS
    response.headers["Access-Control-Expose-Headers"] = "Authorization"
    response.headers["Access-Control-Max-Age"] = "7200"
