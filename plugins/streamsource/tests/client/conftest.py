"""Fixtures of the StreamSource client tests.

* ``mock_http`` — aioresponses made to work with aiohttp 3.14 (upstream issue 289: aiohttp 3.14
  added a required ``stream_writer`` argument to ``ClientResponse``), for answers a server cannot
  easily be made to send. Everything else runs over real HTTP on 127.0.0.1.
* ``guide_server`` — a tiny aiohttp server speaking the older API of the integration guide
  (``/api/v1/users/login`` with a flat body, bare stream objects), for the dialect fallback.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from multibackend_streamsource.options import Options
from yarl import URL

# --- aioresponses compatibility -------------------------------------------------------------


class _NoStreamWriter:
    """Stands in for the request's stream writer of a response that was never sent."""

    output_size = 0


class CompatClientResponse(aiohttp.ClientResponse):
    """A ClientResponse aioresponses can build: ``stream_writer`` gets a stand-in."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _NoStreamWriter())
        super().__init__(method, url, **kwargs)


class compat_aioresponses(aioresponses):
    """aioresponses whose mocked answers use :class:`CompatClientResponse` by default."""

    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", CompatClientResponse)
        super().add(url, method, *args, **kwargs)


@pytest.fixture
def mock_http() -> Iterator[compat_aioresponses]:
    with compat_aioresponses() as mocked:
        yield mocked


# --- tokens -----------------------------------------------------------------------------------

SECRET = "test-secret-of-the-guide-server-not-a-real-one"


def make_token(user_id: int = 1, lifetime: float = 3600.0, **extra: Any) -> str:
    """A token shaped like the server's (HS256, sub, iat, exp, jti)."""
    now = int(time.time())
    claims = {"sub": str(user_id), "scp": "user", "iat": now, "exp": now + lifetime}
    claims.update(extra)
    claims.setdefault("jti", f"jti-{next(_JTI)}")
    return jwt.encode(claims, SECRET, algorithm="HS256")


_JTI = itertools.count(1)


@pytest.fixture
def token_factory() -> Any:
    """``make_token(user_id=1, lifetime=3600.0, **claims)``."""
    return make_token


def options(base_url: str, **kw: Any) -> Options:
    """Options for tests: fast retries; credentials unless a token is given."""
    kw.setdefault("retry_backoff", 0.01)
    kw.setdefault("retry_max_backoff", 0.05)
    if "token" not in kw:
        kw.setdefault("email", "editor@example.com")
        kw.setdefault("password", "Secret-Passw0rd")
    return Options(base_url=base_url, **kw)


@pytest.fixture
def make_options() -> Any:
    """``options(base_url, **kw)``: Options with fast retries and the test credentials."""
    return options


# --- a server speaking the guide's dialect ----------------------------------------------------


class GuideServer:
    """The integration guide's API: flat login at /api/v1/users/login, bare stream objects,
    PUT/PATCH updates, pin endpoints. No /api/v1/login (it answers 404)."""

    EMAIL = "editor@example.com"
    PASSWORD = "Secret-Passw0rd"

    def __init__(self) -> None:
        self.streams: dict[int, dict[str, Any]] = {}
        self.ids = itertools.count(1)
        self.requests: list[tuple[str, str]] = []
        self.login_bodies: list[Any] = []
        self.app = web.Application(middlewares=[self._record])
        r = self.app.router
        r.add_post("/api/v1/users/login", self.login)
        r.add_post("/api/v1/users/signup", self.signup)
        r.add_get("/api/v1/streams", self.index)
        r.add_post("/api/v1/streams", self.create)
        r.add_get("/api/v1/streams/{id}", self.show)
        r.add_route("PATCH", "/api/v1/streams/{id}", self.update)
        r.add_put("/api/v1/streams/{id}", self.update)
        r.add_delete("/api/v1/streams/{id}", self.destroy)
        r.add_put("/api/v1/streams/{id}/pin", self.pin)
        r.add_delete("/api/v1/streams/{id}/pin", self.unpin)

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.path.startswith("/api/v1/streams"):
            auth = request.headers.get("Authorization", "")
            try:
                jwt.decode(auth.split()[-1], SECRET, algorithms=["HS256"])
            except (jwt.PyJWTError, IndexError):
                return web.json_response({"error": "Unauthorized"}, status=401)
        result: web.StreamResponse = await handler(request)
        return result

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.login_bodies.append(body)
        if body.get("email") != self.EMAIL or body.get("password") != self.PASSWORD:
            return web.json_response({"error": "Invalid email or password"}, status=401)
        user = {"id": 1, "email": self.EMAIL, "role": "editor"}
        return web.json_response({"user": user, "token": make_token(1)})

    async def signup(self, request: web.Request) -> web.Response:
        body = await request.json()
        user = {"id": 2, "email": body["email"], "role": "default"}
        return web.json_response({"user": user, "token": make_token(2)})

    def _stream(self, request: web.Request) -> dict[str, Any]:
        stream = self.streams.get(int(request.match_info["id"]))
        if stream is None:
            raise web.HTTPNotFound(
                text='{"error":"Record not found"}', content_type="application/json"
            )
        return stream

    async def index(self, request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        per_page = int(request.query.get("per_page", "25"))
        rows = sorted(self.streams.values(), key=lambda s: s["id"])
        items = rows[(page - 1) * per_page : page * per_page]
        meta = {
            "current_page": page,
            "total_pages": -(-len(rows) // per_page),
            "total_count": len(rows),
            "per_page": per_page,
        }
        return web.json_response({"streams": items, "meta": meta})

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        sid = next(self.ids)
        stream = {
            "id": sid,
            "source": body.get("source"),
            "link": body.get("link"),
            "status": body.get("status", "unknown"),
            "is_pinned": False,
            # The guide shows the stored spellings ("TikTok") in its example.
            "platform": {"tiktok": "TikTok"}.get(body.get("platform"), body.get("platform")),
            "orientation": body.get("orientation"),
            "kind": body.get("kind", "video"),
            "city": body.get("city"),
            "state": body.get("state"),
            "notes": body.get("notes"),
            "title": body.get("title"),
            "posted_by": body.get("posted_by") or self.EMAIL,
            "last_checked_at": None,
            "last_live_at": None,
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:00Z",
            "user": {"id": 1, "email": self.EMAIL, "role": "editor"},
        }
        self.streams[sid] = stream
        return web.json_response(stream, status=201)

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response(self._stream(request))

    async def update(self, request: web.Request) -> web.Response:
        stream = self._stream(request)
        stream.update(await request.json())
        return web.json_response(stream)

    async def destroy(self, request: web.Request) -> web.Response:
        self._stream(request)
        del self.streams[int(request.match_info["id"])]
        return web.Response(status=204)

    async def pin(self, request: web.Request) -> web.Response:
        stream = self._stream(request)
        stream["is_pinned"] = True
        return web.json_response(stream)

    async def unpin(self, request: web.Request) -> web.Response:
        stream = self._stream(request)
        stream["is_pinned"] = False
        return web.json_response(stream)


@pytest.fixture
async def guide_server() -> AsyncIterator[tuple[GuideServer, str]]:
    server = GuideServer()
    test_server = TestServer(server.app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield server, str(test_server.make_url("")).rstrip("/")
    finally:
        await test_server.close()


# --- the emulator ------------------------------------------------------------------------------

EDITOR_EMAIL = "editor@example.com"
EDITOR_PASSWORD = "Secret-Passw0rd"


@pytest.fixture
async def emulator() -> AsyncIterator[Any]:
    """A fresh emulator on 127.0.0.1 with one editor (the test credentials)."""
    from multibackend_streamsource.emulator import UserSpec, run_emulator

    async with run_emulator(
        users=[UserSpec(email=EDITOR_EMAIL, password=EDITOR_PASSWORD, role="editor")]
    ) as emu:
        yield emu


@pytest.fixture
async def backend(emulator: Any) -> AsyncIterator[Any]:
    """An opened backend logged in (lazily) as the emulator's editor."""
    from multibackend_streamsource.backend import StreamSourceBackend

    async with StreamSourceBackend("ss", options(emulator.base_url)) as b:
        yield b
