"""Passwords and JWTs as the server issues and checks them (contract §1.1, §4).

Tokens are HS256 with ``sub`` (the user id as a string), ``scp`` "user", ``aud`` null, ``iat``,
``exp`` (one day; thirty days for service accounts), ``jti`` (a random UUID) and
``service_account``. A request's token is the last whitespace-separated word of its
``Authorization`` header. ``exp`` (and ``nbf``, as ruby-jwt does) are checked when present;
``iat`` and ``aud`` are not; the user
comes from ``sub``, else the legacy ``user_id`` claim; a revoked ``jti`` is refused.

Passwords are stored as salted PBKDF2-SHA256 digests with few rounds: the emulator is a test
server, and logins must stay cheap. Never reuse real passwords with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from typing import Any, Final

import jwt

__all__ = [
    "SERVICE_TOKEN_LIFETIME",
    "TOKEN_LIFETIME",
    "TokenError",
    "TokenService",
    "hash_password",
    "token_from_header",
    "verify_password",
]

TOKEN_LIFETIME: Final = 24 * 3600
SERVICE_TOKEN_LIFETIME: Final = 30 * 24 * 3600
_ROUNDS: Final = 1000
_DECODE_OPTIONS: Final[jwt.types.Options] = {
    "verify_signature": True,
    "verify_exp": True,
    "verify_nbf": True,  # ruby-jwt checks nbf by default
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


def hash_password(password: str) -> str:
    """A salted digest of ``password``, as ``pbkdf2$<rounds>$<salt>$<digest>``."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _ROUNDS)
    return "$".join(
        ("pbkdf2", str(_ROUNDS), base64.b64encode(salt).decode(), base64.b64encode(digest).decode())
    )


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the digest ``stored``."""
    try:
        _, rounds, salt, digest = stored.split("$")
        computed = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(salt), int(rounds)
        )
    except (ValueError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


def token_from_header(header: str | None) -> str | None:
    """The token of an ``Authorization`` header: its last whitespace-separated word."""
    if not header:
        return None
    words = header.split()
    return words[-1] if words else None


class TokenError(Exception):
    """The token cannot be used (bad signature, malformed, wrong algorithm, expired)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class TokenService:
    """Issues and decodes tokens with one HS256 secret."""

    def __init__(self, secret: str) -> None:
        if len(secret.encode()) < 32:
            raise ValueError("the token secret must be at least 32 bytes long (HS256)")
        self._secret = secret
        # Decoding verifies an HMAC and parses JSON on every request; remember the claims of
        # tokens seen recently (expiry is still checked on every use).
        self._cache: dict[str, dict[str, Any]] = {}

    def issue(self, user_id: int, *, service_account: bool, now: float | None = None) -> str:
        """A new token for ``user_id``."""
        issued = int(time.time() if now is None else now)
        lifetime = SERVICE_TOKEN_LIFETIME if service_account else TOKEN_LIFETIME
        claims = {
            "sub": str(user_id),
            "scp": "user",
            "aud": None,
            "iat": issued,
            "exp": issued + lifetime,
            "jti": str(uuid.uuid4()),
            "service_account": service_account,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def decode(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; raises TokenError."""
        claims = self._cache.get(token)
        if claims is None:
            try:
                claims = jwt.decode(
                    token, self._secret, algorithms=["HS256"], options=_DECODE_OPTIONS
                )
            except jwt.ExpiredSignatureError as exc:
                raise TokenError("expired", expired=True) from exc
            except jwt.PyJWTError as exc:
                raise TokenError(type(exc).__name__) from exc
            if not isinstance(claims, dict):
                raise TokenError("claims are not an object")
            if len(self._cache) >= 4096:
                self._cache.clear()
            self._cache[token] = claims
        exp = claims.get("exp")
        if exp is not None:
            if not isinstance(exp, int | float) or isinstance(exp, bool):
                raise TokenError("exp is not a number")
            if exp <= time.time():
                raise TokenError("expired", expired=True)
        return claims

    @staticmethod
    def user_id(claims: dict[str, Any]) -> object:
        """The user id a token names: ``sub``, else the legacy ``user_id`` claim."""
        sub = claims.get("sub")
        return sub if sub is not None else claims.get("user_id")
