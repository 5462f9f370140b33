"""Shared helpers of the emulator tests (conftest puts this folder on sys.path)."""

from __future__ import annotations

from typing import Any

import aiohttp
import attrs
from multibackend_streamsource.emulator import Emulator, UserSpec

PASSWORD = "Passw0rd1"
SECRET = "emulator-test-secret-" + "x" * 60

#: Test users by role name; "other" is a second editor (ownership checks).
EMAILS = {
    "default": "viewer@example.com",
    "editor": "editor@example.com",
    "other": "other@example.com",
    "admin": "admin@example.com",
}
ROLES = {"default": "default", "editor": "editor", "other": "editor", "admin": "admin"}


@attrs.frozen
class Reply:
    status: int
    body: Any
    headers: Any
    text: str


class Api:
    """Calls the emulator as one of the test users (``as_=None``: no Authorization header)."""

    def __init__(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        self.emu = emu
        self.http = http
        self._tokens: dict[str, str] = {}

    def token(self, who: str) -> str:
        if who not in self._tokens:
            self._tokens[who] = self.emu.token_for(EMAILS[who])
        return self._tokens[who]

    async def call(
        self,
        method: str,
        path: str,
        *,
        as_: str | None = "editor",
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        params: Any = None,
        accept_json: bool = True,
    ) -> Reply:
        hdrs: dict[str, str] = {}
        if accept_json:
            hdrs["Accept"] = "application/json"
        if as_ is not None:
            hdrs["Authorization"] = f"Bearer {self.token(as_)}"
        hdrs.update(headers or {})
        async with self.http.request(
            method, path, json=json, data=data, headers=hdrs, params=params
        ) as resp:
            text = await resp.text()
            try:
                body = await resp.json(content_type=None) if text else None
            except ValueError:
                body = None
            return Reply(resp.status, body, resp.headers, text)

    async def create(self, as_: str = "editor", **fields: Any) -> dict[str, Any]:
        body = {"source": "alice", "link": "https://twitch.tv/alice", **fields}
        reply = await self.call("POST", "/api/v1/streams", as_=as_, json=body)
        assert reply.status == 201, reply.text
        return reply.body["stream"]  # type: ignore[no-any-return]


def users() -> list[UserSpec]:
    return [UserSpec(email=EMAILS[k], password=PASSWORD, role=ROLES[k]) for k in EMAILS]
