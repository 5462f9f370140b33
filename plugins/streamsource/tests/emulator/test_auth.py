"""Login, logout, signup and token checks (contract §1.1, §4)."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from emulator_helpers import EMAILS, PASSWORD, SECRET, Api
from multibackend_streamsource.emulator import Emulator, EmulatorConfig, UserSpec, run_emulator

TS_MS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


async def login(api: Api, body: object) -> tuple[int, object]:
    reply = await api.call("POST", "/api/v1/login", as_=None, json=body)
    return reply.status, reply.body


async def test_login_answers_status_user_and_token(api: Api) -> None:
    status, body = await login(api, {"user": {"email": EMAILS["editor"], "password": PASSWORD}})
    assert status == 200
    assert isinstance(body, dict)
    assert body["status"] == {"code": 200, "message": "Logged in successfully."}
    assert list(body["user"]) == ["id", "email", "role", "created_at", "updated_at"]
    assert body["user"]["email"] == EMAILS["editor"]
    assert body["user"]["role"] == "editor"
    assert body["user"]["created_at"].endswith("Z")
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["sub"] == str(body["user"]["id"])
    assert claims["scp"] == "user"
    assert claims["aud"] is None
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert claims["service_account"] is False
    uuid.UUID(claims["jti"])
    # The token works.
    reply = await api.http.get(
        "/api/v1/streams", headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert reply.status == 200


async def test_service_account_tokens_last_thirty_days() -> None:
    spec = UserSpec(email="bot@example.com", password=PASSWORD, role="editor", service_account=True)
    async with run_emulator(users=[spec], secret=SECRET) as emu:
        token = emu.token_for("bot@example.com")
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False})
        assert claims["exp"] - claims["iat"] == 30 * 24 * 3600
        assert claims["service_account"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"email": EMAILS["editor"], "password": PASSWORD},  # flat body: wrong wrapper
        {"user": {"email": EMAILS["editor"], "password": "wrong-Passw0rd1"}},
        {"user": {"email": "nobody@example.com", "password": PASSWORD}},
        {"user": {"email": EMAILS["editor"].upper(), "password": PASSWORD}},  # exact lookup
        {"user": {"email": EMAILS["editor"]}},
        {"user": "editor"},
        {},
        [1, 2],
    ],
)
async def test_login_failures_answer_401(api: Api, body: object) -> None:
    assert await login(api, body) == (401, {"error": "Invalid email or password"})


async def test_login_with_malformed_json_answers_400(api: Api) -> None:
    reply = await api.call(
        "POST",
        "/api/v1/login",
        as_=None,
        data=b'{"user":',
        headers={"Content-Type": "application/json"},
    )
    assert (reply.status, reply.body) == (400, {"status": 400, "error": "Bad Request"})


async def test_login_has_no_get_route(api: Api) -> None:
    reply = await api.call("GET", "/api/v1/login", as_=None)
    assert (reply.status, reply.body) == (404, {"status": 404, "error": "Not Found"})


async def test_old_guide_paths_do_not_exist(api: Api) -> None:
    body = {"user": {"email": EMAILS["editor"], "password": PASSWORD}}
    for path in ("/api/v1/users/login", "/api/v1/users/signup"):
        reply = await api.call("POST", path, as_=None, json=body)
        assert reply.status == 404


def _token(claims: dict[str, object], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _claims(user_id: int, **extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": str(user_id), "iat": now, "exp": now + 60, "jti": str(uuid.uuid4()), **extra}


async def _status_with_header(api: Api, header: str | None) -> int:
    headers = {} if header is None else {"Authorization": header}
    reply = await api.call("GET", "/api/v1/streams", as_=None, headers=headers)
    if reply.status == 401:
        assert reply.body == {"error": "Unauthorized"}
        assert "WWW-Authenticate" not in reply.headers
    return reply.status


async def test_token_is_the_last_word_of_the_header(api: Api, emu: Emulator) -> None:
    token = api.token("editor")
    assert await _status_with_header(api, f"Bearer {token}") == 200
    assert await _status_with_header(api, token) == 200
    assert await _status_with_header(api, f"Foo {token}") == 200
    assert await _status_with_header(api, f"Bearer junk {token}") == 200
    assert await _status_with_header(api, f"Bearer {token} junk") == 401
    assert await _status_with_header(api, "Bearer") == 401
    assert await _status_with_header(api, "") == 401
    assert await _status_with_header(api, None) == 401


async def test_token_checks(api: Api, emu: Emulator) -> None:
    uid = emu.user(EMAILS["editor"]).id  # type: ignore[union-attr]
    now = int(time.time())
    cases = {
        "valid": (_token(_claims(uid)), 200),
        "no exp never expires": (_token({"sub": str(uid)}), 200),
        "legacy user_id claim": (_token({"user_id": uid, "exp": now + 60}), 200),
        "integer sub": (_token({"sub": uid, "exp": now + 60}), 200),
        "expired": (_token(_claims(uid, exp=now - 5)), 401),
        "not yet valid": (_token(_claims(uid, nbf=now + 60)), 401),
        "iat in the future is not checked": (_token(_claims(uid, iat=now + 600)), 200),
        "other secret": (_token(_claims(uid), key="another-secret-" + "y" * 40), 401),
        "HS512": (_token(_claims(uid), algorithm="HS512"), 401),
        "unknown user": (_token(_claims(999)), 401),
        "no subject": (_token({"exp": now + 60}), 401),
        "garbage": ("not.a.token", 401),
        "alg none": (jwt.encode(_claims(uid), None, algorithm="none"), 401),  # type: ignore[arg-type]
    }
    for name, (token, expected) in cases.items():
        assert await _status_with_header(api, f"Bearer {token}") == expected, name


async def test_deleted_users_tokens_stop_working(api: Api, emu: Emulator) -> None:
    assert (await api.call("GET", "/api/v1/streams", as_="other")).status == 200
    await emu.remove_user(EMAILS["other"])
    assert (await api.call("GET", "/api/v1/streams", as_="other")).status == 401


async def test_logout_revokes_only_that_token(api: Api, emu: Emulator) -> None:
    first = emu.token_for(EMAILS["editor"])
    second = emu.token_for(EMAILS["editor"])
    reply = await api.call(
        "DELETE", "/api/v1/logout", as_=None, headers={"Authorization": f"Bearer {first}"}
    )
    assert (reply.status, reply.body) == (
        200,
        {"status": 200, "message": "Logged out successfully."},
    )
    assert await _status_with_header(api, f"Bearer {first}") == 401
    assert await _status_with_header(api, f"Bearer {second}") == 200


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 200),
        ("Bearer", 200),
        ("Token abc.def.ghi", 200),  # only a Bearer token is looked at
        ("Bearer not-a-jwt", 500),  # the revocation middleware raises
    ],
)
async def test_logout_without_a_usable_token(api: Api, header: str | None, status: int) -> None:
    headers = {} if header is None else {"Authorization": header}
    reply = await api.call("DELETE", "/api/v1/logout", as_=None, headers=headers)
    assert reply.status == status


async def test_logout_ignores_an_expired_token(api: Api, emu: Emulator) -> None:
    uid = emu.user(EMAILS["editor"]).id  # type: ignore[union-attr]
    token = _token(_claims(uid, exp=int(time.time()) - 10))
    reply = await api.call(
        "DELETE", "/api/v1/logout", as_=None, headers={"Authorization": f"Bearer {token}"}
    )
    assert reply.status == 200


async def test_logout_in_maintenance_still_revokes(api: Api, emu: Emulator) -> None:
    token = emu.token_for(EMAILS["editor"])
    await emu.set_flag("maintenance_mode", "all")
    reply = await api.call(
        "DELETE", "/api/v1/logout", as_=None, headers={"Authorization": f"Bearer {token}"}
    )
    assert reply.status == 503
    await emu.set_flag("maintenance_mode", "off")
    assert await _status_with_header(api, f"Bearer {token}") == 401


def _signup(email: object, password: object, confirmation: object = None) -> dict[str, object]:
    user = {"email": email, "password": password}
    if confirmation is not None:
        user["password_confirmation"] = confirmation
    return {"user": user}


async def test_signup_creates_the_user_then_answers_500(api: Api) -> None:
    body = _signup("  New@Example.com ", "Secret123", "Secret123")
    body["user"]["role"] = "admin"  # type: ignore[index]
    reply = await api.call("POST", "/api/v1/signup", as_=None, json=body)
    assert (reply.status, reply.body) == (500, {"status": 500, "error": "Internal Server Error"})
    status, login_body = await login(
        api, {"user": {"email": "new@example.com", "password": "Secret123"}}
    )
    assert status == 200
    assert login_body["user"]["role"] == "default"  # type: ignore[index]


async def test_signup_intended_answer_when_the_quirk_is_off(api: Api, emu: Emulator) -> None:
    emu.set_signup_500(False)
    reply = await api.call(
        "POST", "/api/v1/signup", as_=None, json=_signup("n@example.com", "Secret123")
    )
    assert reply.status == 200
    assert reply.body["status"] == {"code": 200, "message": "Signed up successfully."}
    assert reply.body["data"]["email"] == "n@example.com"
    assert reply.body["data"]["role"] == "default"
    assert "token" not in reply.body
    token = reply.headers["Authorization"].split()[-1]
    assert await _status_with_header(api, f"Bearer {token}") == 200


PREFIX = "User couldn't be created successfully. "


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_signup("", "Secret123"), "Email can't be blank"),
        (_signup("no-at-sign", "Secret123"), "Email is invalid"),
        (_signup(EMAILS["editor"].upper(), "Secret123"), "Email has already been taken"),
        (_signup("a@b.c", "Short1"), "Password is too short (minimum is 8 characters)"),
        (_signup("a@b.c", "A1" + "a" * 127), "Password is too long (maximum is 128 characters)"),
        (
            _signup("a@b.c", "alllowercase1"),
            "Password must include lowercase, uppercase, and number",
        ),
        (
            _signup("a@b.c", "Secret123", "Secret124"),
            "Password confirmation doesn't match Password",
        ),
        (
            _signup("", ""),
            "Email can't be blank and Password can't be blank",
        ),
        (
            _signup("bad", "short"),
            "Email is invalid, Password is too short (minimum is 8 characters), and "
            "Password must include lowercase, uppercase, and number",
        ),
    ],
)
async def test_signup_validation_answers_422(api: Api, body: object, message: str) -> None:
    reply = await api.call("POST", "/api/v1/signup", as_=None, json=body)
    assert (reply.status, reply.body) == (422, {"status": {"message": PREFIX + message}})


@pytest.mark.parametrize("body", [{}, {"email": "a@b.c", "password": "Secret123"}, {"user": {}}])
async def test_signup_without_the_user_wrapper_answers_400(api: Api, body: object) -> None:
    reply = await api.call("POST", "/api/v1/signup", as_=None, json=body)
    assert reply.status == 400


async def test_signup_is_not_blocked_by_maintenance(api: Api, emu: Emulator) -> None:
    await emu.set_flag("maintenance_mode", "all")
    reply = await api.call(
        "POST", "/api/v1/signup", as_=None, json=_signup("m@example.com", "Secret123")
    )
    assert reply.status == 500
    assert emu.user("m@example.com") is not None
    status, body = await login(api, {"user": {"email": "m@example.com", "password": "Secret123"}})
    assert status == 503
    assert body == {
        "error": "The API is currently under maintenance. Please try again later.",
        "maintenance": True,
    }


async def test_config_is_used_for_new_emulators() -> None:
    async with run_emulator(EmulatorConfig(signup_500=False)) as emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert emu.users() == []
