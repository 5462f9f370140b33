"""Health endpoints (contract §1.5): no authentication, no maintenance block."""

from __future__ import annotations

from aiohttp import web

from multibackend.model import utc_now
from multibackend_streamsource.emulator.responses import json_response
from multibackend_streamsource.emulator.serialize import ts_s
from multibackend_streamsource.emulator.state import STATE

__all__ = ["routes"]


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "healthy", "timestamp": ts_s(utc_now()), "version": "1.0.0"})


async def live(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    error = request.app[STATE].ready_error
    if error is not None:
        return json_response({"status": "not ready", "error": error}, status=503)
    return json_response({"status": "ready", "database": "connected"})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/health", health),
        web.get("/health/live", live),
        web.get("/health/ready", ready),
    ]
