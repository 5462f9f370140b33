"""Response bodies: the app's JSON errors and Rails' own error pages.

Errors the app renders itself are JSON ``{"error": ...}`` bodies. Errors Rails renders (malformed
JSON 400, unknown route 404, unhandled exception 500, the emulator's 413) come from the public
exceptions app: JSON ``{"status":N,"error":"<reason>"}`` only when the request's preferred format
is JSON (``Accept: application/json``), otherwise an HTML page (contract §1.0).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web

__all__ = ["ApiError", "json_response", "rails_error_response", "wants_json"]

# Rack 3 names a few statuses after RFC 9110 where Python still uses the older phrases.
_RACK_REASONS: Final = {413: "Content Too Large", 422: "Unprocessable Content"}
_DUMPS: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A compact JSON response with Rails' content type."""
    return web.Response(
        body=_DUMPS(body).encode(),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def wants_json(request: web.BaseRequest) -> bool:
    """True when the request's first acceptable format is JSON, as Rails decides it.

    Rails ignores browser-like Accept headers (a list with ``*/*`` among other types) and then
    falls back to HTML, so only a JSON type leading a non-browser Accept header counts.
    """
    accept = request.headers.get("Accept", "")
    if not accept:
        return False
    first = accept.split(",", 1)[0].split(";", 1)[0].strip().lower()
    if first not in ("application/json", "text/json") and not first.endswith("+json"):
        return False
    types = [t.split(";", 1)[0].strip() for t in accept.split(",")]
    return not (len(types) > 1 and "*/*" in types)


def rails_error_response(request: web.BaseRequest, status: int) -> web.Response:
    """The body Rails' public exceptions app renders for ``status``."""
    reason = _RACK_REASONS.get(status) or HTTPStatus(status).phrase
    if wants_json(request):
        return json_response({"status": status, "error": reason}, status=status)
    page = (
        f"<!DOCTYPE html><html><head><title>{reason}</title></head>"
        f"<body><h1>{status} {reason}</h1></body></html>\n"
    )
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


class ApiError(Exception):
    """An error answer. ``body`` None means a Rails-rendered error (see the module docstring)."""

    def __init__(
        self,
        status: int,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = headers

    @classmethod
    def rails(cls, status: int) -> ApiError:
        """An error Rails itself renders (400, 404, 413, 500)."""
        return cls(status)

    @classmethod
    def message(cls, status: int, message: str) -> ApiError:
        """The app's ``{"error": message}`` answer."""
        return cls(status, {"error": message})

    def response(self, request: web.BaseRequest) -> web.Response:
        if self.body is None:
            resp = rails_error_response(request, self.status)
            if self.headers:
                resp.headers.update(self.headers)
            return resp
        return json_response(self.body, status=self.status, headers=self.headers)


UNAUTHORIZED: Final = {"error": "Unauthorized"}
FORBIDDEN: Final = {"error": "You are not authorized to perform this action"}
NOT_FOUND: Final = {"error": "Record not found"}
MAINTENANCE: Final = {
    "error": "The API is currently under maintenance. Please try again later.",
    "maintenance": True,
}
TOO_MANY: Final = {"error": "Too many requests. Please try again later."}
