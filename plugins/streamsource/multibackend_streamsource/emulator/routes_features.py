"""Flag-gated stream endpoints: analytics, bulk import, export (contract §6).

The flag is checked right after authentication and maintenance, before any lookup or role
check; a disabled flag answers 403 with the feature's own message.
"""

from __future__ import annotations

import random
from typing import Any

from aiohttp import web

from multibackend.model import utc_now
from multibackend_streamsource.emulator.params import request_params
from multibackend_streamsource.emulator.records import PERMITTED_BULK_KEYS, UserRecord
from multibackend_streamsource.emulator.responses import FORBIDDEN, ApiError, json_response
from multibackend_streamsource.emulator.routes_streams import (
    can_create,
    filter_status,
    find_stream,
    new_stream,
    save_new_stream,
    visible_streams,
)
from multibackend_streamsource.emulator.rules import assign, permitted, validate_stream
from multibackend_streamsource.emulator.serialize import export_item, ts_ms, ts_s
from multibackend_streamsource.emulator.state import STATE, EmulatorState

__all__ = ["routes"]

_random = random.Random()


def _require_flag(state: EmulatorState, user: UserRecord, flag: str, message: str) -> None:
    if not state.flags.enabled(flag, user.role, user.email):
        raise ApiError(403, {"error": message})


async def analytics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    user = state.authenticate(request)
    state.check_maintenance()
    _require_flag(state, user, "stream_analytics", "This feature is not currently available")
    stream = find_stream(state, await request_params(request))
    return json_response(
        {
            "stream_id": stream.id,
            "views_count": _random.randint(1000, 10000),
            "unique_viewers": _random.randint(100, 1000),
            "average_watch_time": _random.randint(60, 3600),
            "peak_concurrent_viewers": _random.randint(50, 500),
            "last_updated": ts_ms(utc_now()),
        }
    )


async def bulk_import(request: web.Request) -> web.Response:
    """Each item is saved on its own; an invalid enum value (or an item that is not an object)
    aborts with 500 after the earlier items were saved, as on the server."""
    state = request.app[STATE]
    user = state.authenticate(request)
    state.check_maintenance()
    _require_flag(state, user, "stream_bulk_import", "Bulk import is not currently available")
    if not can_create(user):
        raise ApiError(403, FORBIDDEN)
    params = await request_params(request)
    items = params.get("streams")
    if not isinstance(items, list):
        items = []
    imported = 0
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError.rails(500)
        stream = new_stream(user)
        assign(stream, permitted(item, PERMITTED_BULK_KEYS))
        messages = validate_stream(
            stream,
            user.email,
            location_validation=state.flags.enabled("location_validation"),
            known_cities=state.known_cities,
        )
        if messages:
            errors.append({"index": index, "errors": messages})
            continue
        await save_new_stream(state, stream)
        imported += 1
    return json_response({"imported": imported, "total": len(items), "errors": errors})


async def export(request: web.Request) -> web.Response:
    state = request.app[STATE]
    user = state.authenticate(request)
    state.check_maintenance()
    _require_flag(state, user, "stream_export", "Export feature is not currently available")
    params = await request_params(request)
    rows = filter_status(visible_streams(state, user), params)
    users = state.store.users
    items = [export_item(s, users.get(s.user_id)) for s in rows]
    return json_response({"exported_at": ts_s(utc_now()), "count": len(items), "streams": items})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/streams/export", export),
        web.post("/api/v1/streams/bulk_import", bulk_import),
        web.get("/api/v1/streams/{id}/analytics", analytics),
    ]
