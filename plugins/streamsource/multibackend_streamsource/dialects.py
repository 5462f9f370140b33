"""The two dialects of the StreamSource API this client speaks.

* ``CURRENT`` — today's server (contract §1.1–§3): ``POST /api/v1/login`` and
  ``/api/v1/signup`` with the credentials wrapped in ``{"user": {...}}``; single streams wrapped
  in ``{"stream": {...}}``.
* ``GUIDE`` — older deployments, as the integration guide describes them (contract §8):
  ``/api/v1/users/login`` and ``/api/v1/users/signup`` with flat bodies; bare objects.

Stream endpoints are the same in both; reading accepts either envelope, so only the
authentication calls differ. The backend starts with ``CURRENT`` and switches to ``GUIDE`` for
good when the server answers 404 on ``/api/v1/login``.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["CURRENT", "GUIDE", "Dialect"]


@attrs.frozen
class Dialect:
    name: str
    login_path: str
    signup_path: str
    #: Whether credentials go inside ``{"user": {...}}``.
    wrap_credentials: bool
    #: Whether signup sends ``password_confirmation``.
    confirm_password: bool

    def login_body(self, email: str, password: str) -> dict[str, Any]:
        creds = {"email": email, "password": password}
        return {"user": creds} if self.wrap_credentials else creds

    def signup_body(self, email: str, password: str) -> dict[str, Any]:
        creds = {"email": email, "password": password}
        if self.confirm_password:
            creds["password_confirmation"] = password
        return {"user": creds} if self.wrap_credentials else creds

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"


CURRENT = Dialect(
    name="current",
    login_path="/api/v1/login",
    signup_path="/api/v1/signup",
    wrap_credentials=True,
    confirm_password=True,
)

GUIDE = Dialect(
    name="guide",
    login_path="/api/v1/users/login",
    signup_path="/api/v1/users/signup",
    wrap_credentials=False,
    confirm_password=False,
)


def token_from_login(body: Any) -> str | None:
    """The token of a login answer (``{"token": ...}`` in both dialects), or None."""
    if isinstance(body, dict):
        token = body.get("token")
        if isinstance(token, str) and token:
            return token
    return None
