"""Login, logout and signup (contract §1.1, §4).

Login reads the wrapped ``{"user": {"email", "password"}}`` body (a flat body is an unknown
user: 401), looks the email up exactly, and answers the token in the body only. Logout always
answers 200; a ``Bearer`` token in its header is revoked (its ``jti`` denied from then on), an
expired one ignored, an undecodable one answers 500 as the server's revocation middleware does.
Signup takes ``{"user": {email, password, password_confirmation}}``, creates a ``default`` user
and then, by default, answers 500 as the server does at HEAD (``signup_500`` switches to the
intended 200 answer with the token in an ``Authorization`` response header).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from multibackend.model import utc_now
from multibackend_streamsource.emulator.auth import TokenError, hash_password, verify_password
from multibackend_streamsource.emulator.params import request_params
from multibackend_streamsource.emulator.records import UserRecord
from multibackend_streamsource.emulator.responses import ApiError, json_response
from multibackend_streamsource.emulator.rules import signup_errors, to_sentence
from multibackend_streamsource.emulator.serialize import user_json
from multibackend_streamsource.emulator.state import STATE

__all__ = ["routes"]

_INVALID_LOGIN = {"error": "Invalid email or password"}


def _scalar(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


async def login(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.check_maintenance()
    params = await request_params(request)
    wrapped = params.get("user")
    if not isinstance(wrapped, dict):
        raise ApiError(401, _INVALID_LOGIN)
    email = _scalar(wrapped, "email")
    password = _scalar(wrapped, "password")
    user = None if email is None else state.store.user_by_email(email)
    if user is None or password is None or not verify_password(password, user.password_hash):
        raise ApiError(401, _INVALID_LOGIN)
    token = state.tokens.issue(user.id, service_account=user.service_account)
    return json_response(
        {
            "status": {"code": 200, "message": "Logged in successfully."},
            "user": user_json(user),
            "token": token,
        }
    )


async def logout(request: web.Request) -> web.Response:
    state = request.app[STATE]
    words = request.headers.get("Authorization", "").split()
    if len(words) >= 2 and words[0] == "Bearer":
        try:
            claims = state.tokens.decode(words[1])
        except TokenError as exc:
            if not exc.expired:
                raise ApiError.rails(500) from None
        else:
            jti = claims.get("jti")
            if isinstance(jti, str):
                await state.store.revoke(jti)
    state.check_maintenance()
    return json_response({"status": 200, "message": "Logged out successfully."})


async def signup(request: web.Request) -> web.Response:
    state = request.app[STATE]
    params = await request_params(request)
    wrapped = params.get("user")
    if not isinstance(wrapped, dict) or not wrapped:
        raise ApiError.rails(400)
    raw_email = _scalar(wrapped, "email")
    email = None if raw_email is None else raw_email.strip().lower()
    password = _scalar(wrapped, "password")
    confirmation = _scalar(wrapped, "password_confirmation")
    taken = email is not None and state.store.user_by_email(email) is not None
    errors = signup_errors(email, password, confirmation, taken=taken)
    if errors:
        message = "User couldn't be created successfully. " + to_sentence(errors)
        raise ApiError(422, {"status": {"message": message}})
    assert email is not None
    assert password is not None
    now = utc_now()
    user = UserRecord(
        id=state.store.next_user_id(),
        email=email,
        password_hash=hash_password(password),
        role="default",
        created_at=now,
        updated_at=now,
    )
    await state.store.save_user(user)
    if state.signup_500:
        # The server's success branch indexes a hash that does not exist: NoMethodError.
        raise ApiError.rails(500)
    token = state.tokens.issue(user.id, service_account=False)
    return json_response(
        {"status": {"code": 200, "message": "Signed up successfully."}, "data": user_json(user)},
        headers={"Authorization": f"Bearer {token}"},
    )


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/login", login),
        web.delete("/api/v1/logout", logout),
        web.post("/api/v1/signup", signup),
    ]
