"""Stream endpoints: list, create, show, update, delete, pin, unpin (contract §1.2, §2, §3, §7).

Every handler follows the server's check order: authentication (401), maintenance (503),
parameters (400 for a malformed body), record lookup (404), policy (403), then the action.
Create builds the record from the body *before* the policy check, so an invalid enum value
answers 500 even to a user who would get 403.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from multibackend.model import utc_now
from multibackend_streamsource.emulator.params import blank, cast_boolean, request_params, ruby_to_i
from multibackend_streamsource.emulator.records import (
    ENUM_LOOKUP,
    PERMITTED_STREAM_KEYS,
    StreamRecord,
    UserRecord,
)
from multibackend_streamsource.emulator.responses import (
    FORBIDDEN,
    NOT_FOUND,
    ApiError,
    json_response,
)
from multibackend_streamsource.emulator.rules import (
    apply_save,
    assign,
    permitted,
    validate_stream,
)
from multibackend_streamsource.emulator.state import STATE, EmulatorState

__all__ = [
    "can_create",
    "can_modify",
    "filter_status",
    "find_stream",
    "new_stream",
    "routes",
    "save_new_stream",
    "visible_streams",
]


def can_create(user: UserRecord) -> bool:
    return user.role in ("editor", "admin")


def can_modify(user: UserRecord, stream: StreamRecord) -> bool:
    """StreamPolicy#update?: (editor or admin) and (owner or admin)."""
    return user.role == "admin" or (user.role == "editor" and stream.user_id == user.id)


def visible_streams(state: EmulatorState, user: UserRecord) -> list[StreamRecord]:
    """The policy scope: admins see every stream, everyone else the non-archived ones."""
    rows = state.store.iter_streams()
    if user.role == "admin":
        return list(rows)
    return [s for s in rows if not s.is_archived]


def _status_keys(value: Any) -> set[str]:
    values = value if isinstance(value, list) else [value]
    lookup = ENUM_LOOKUP["status"]
    return {lookup[v] for v in values if isinstance(v, str) and v in lookup}


def filter_status(rows: list[StreamRecord], params: dict[str, Any]) -> list[StreamRecord]:
    """``status`` (equality, arrays give IN) and ``notStatus`` (exclusion); unknown values
    match nothing."""
    if not blank(params.get("status")):
        keys = _status_keys(params["status"])
        rows = [s for s in rows if s.status in keys]
    if not blank(params.get("notStatus")):
        keys = _status_keys(params["notStatus"])
        rows = [s for s in rows if s.status not in keys]
    return rows


def find_stream(state: EmulatorState, params: dict[str, Any]) -> StreamRecord:
    """``Stream.find(params[:id])`` on a copy; ApiError 404 when absent."""
    stream = state.store.stream_copy(ruby_to_i(params.get("id")))
    if stream is None:
        raise ApiError(404, NOT_FOUND)
    return stream


def _sorted(rows: list[StreamRecord], sort: object) -> list[StreamRecord]:
    if sort == "name":
        return sorted(rows, key=lambda s: (s.source or "", s.id))
    if sort == "-name":
        return sorted(rows, key=lambda s: (s.source or "", s.id), reverse=True)
    if sort == "created":
        return sorted(rows, key=lambda s: (s.created_at, s.id))
    if sort == "-created":
        return sorted(rows, key=lambda s: (s.created_at, s.id), reverse=True)
    return sorted(rows, key=lambda s: (s.is_pinned, s.created_at, s.id), reverse=True)


async def index(request: web.Request) -> web.Response:
    state = request.app[STATE]
    user = state.authenticate(request)
    state.check_maintenance()
    params = await request_params(request)
    rows = filter_status(visible_streams(state, user), params)
    if not blank(params.get("user_id")):
        owner = state.store.users.get(ruby_to_i(params["user_id"]))
        if owner is None:
            raise ApiError(404, NOT_FOUND)
        rows = [s for s in rows if s.user_id == owner.id]
    pinned = params.get("is_pinned")
    if pinned is not None and not isinstance(pinned, list | dict):
        wanted = cast_boolean(pinned)
        if wanted is not None:
            rows = [s for s in rows if s.is_pinned == wanted]
    page = ruby_to_i(params["page"]) if "page" in params else 1
    per_page = min(ruby_to_i(params["per_page"]) if "per_page" in params else 25, 100)
    if page < 1 or per_page < 1:
        # A negative OFFSET or LIMIT fails in PostgreSQL; per_page 0 divides by zero.
        raise ApiError.rails(500)
    rows = _sorted(rows, params.get("sort"))
    start = (page - 1) * per_page
    items = [state.render_stream(s, user) for s in rows[start : start + per_page]]
    meta = {
        "current_page": page,
        "total_pages": math.ceil(len(rows) / per_page),
        "total_count": len(rows),
        "per_page": per_page,
    }
    return json_response({"streams": items, "meta": meta})


async def save_new_stream(state: EmulatorState, stream: StreamRecord) -> StreamRecord:
    """Insert a validated stream: sequence id, timestamps, status side effects."""
    if stream.location_id is not None:
        # The emulator has no locations: any location_id breaks the foreign key (HTTP 500).
        raise ApiError.rails(500)
    stream.id = state.store.next_stream_id()
    apply_save(stream, None, utc_now())
    return await state.store.save_stream(stream)


def new_stream(user: UserRecord) -> StreamRecord:
    now = utc_now()
    return StreamRecord(id=0, user_id=user.id, created_at=now, updated_at=now)


def _unprocessable(errors: Iterable[str]) -> ApiError:
    return ApiError(422, {"error": ", ".join(errors)})


def _validate(state: EmulatorState, stream: StreamRecord) -> list[str]:
    owner = state.store.users.get(stream.user_id)
    return validate_stream(
        stream,
        owner.email if owner is not None else "",
        location_validation=state.flags.enabled("location_validation"),
        known_cities=state.known_cities,
    )


async def create(request: web.Request) -> web.Response:
    state = request.app[STATE]
    user = state.authenticate(request)
    state.check_maintenance()
    params = await request_params(request)
    stream = new_stream(user)
    assign(stream, permitted(params, PERMITTED_STREAM_KEYS))
    if not can_create(user):
        raise ApiError(403, FORBIDDEN)
    errors = _validate(state, stream)
    if errors:
        raise _unprocessable(errors)
    await save_new_stream(state, stream)
    return json_response({"stream": state.render_stream(stream, user)}, status=201)


async def show(request: web.Request) -> web.Response:
    state = request.app[STATE]
    user = state.authenticate(request)
    state.check_maintenance()
    stream = find_stream(state, await request_params(request))
    return json_response({"stream": state.render_stream(stream, user)})


async def _authorized(
    request: web.Request,
) -> tuple[EmulatorState, UserRecord, StreamRecord, dict[str, Any]]:
    state = request.app[STATE]
    user = state.authenticate(request)
    state.check_maintenance()
    params = await request_params(request)
    stream = find_stream(state, params)
    if not can_modify(user, stream):
        raise ApiError(403, FORBIDDEN)
    return state, user, stream, params


async def _save_changes(state: EmulatorState, stream: StreamRecord) -> None:
    before = state.store.streams[stream.id]
    if stream.location_id is not None and stream.location_id != before.location_id:
        raise ApiError.rails(500)
    if apply_save(stream, before, utc_now()):
        await state.store.save_stream(stream)


async def update(request: web.Request) -> web.Response:
    state, user, stream, params = await _authorized(request)
    assign(stream, permitted(params, PERMITTED_STREAM_KEYS))
    errors = _validate(state, stream)
    if errors:
        raise _unprocessable(errors)
    await _save_changes(state, stream)
    return json_response({"stream": state.render_stream(stream, user)})


async def destroy(request: web.Request) -> web.Response:
    state, _, stream, _ = await _authorized(request)
    await state.store.delete_stream(stream.id)
    return web.Response(status=204)


async def _set_pinned(request: web.Request, pinned: bool) -> web.Response:
    state, user, stream, _ = await _authorized(request)
    stream.is_pinned = pinned
    if _validate(state, stream):
        # pin!/unpin! use update!: an otherwise invalid stream raises RecordInvalid (500).
        raise ApiError.rails(500)
    await _save_changes(state, stream)
    return json_response({"stream": state.render_stream(stream, user)})


async def pin(request: web.Request) -> web.Response:
    return await _set_pinned(request, True)


async def unpin(request: web.Request) -> web.Response:
    return await _set_pinned(request, False)


def routes() -> list[web.RouteDef]:
    """Member routes last, so ``/streams/export`` and ``/streams/bulk_import`` win."""
    return [
        web.get("/api/v1/streams", index),
        web.post("/api/v1/streams", create),
        web.get("/api/v1/streams/{id}", show),
        web.put("/api/v1/streams/{id}", update),
        web.patch("/api/v1/streams/{id}", update),
        web.delete("/api/v1/streams/{id}", destroy),
        web.put("/api/v1/streams/{id}/pin", pin),
        web.delete("/api/v1/streams/{id}/pin", unpin),
    ]
