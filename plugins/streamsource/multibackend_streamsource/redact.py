"""Keeping secrets out of messages: every text built from a server answer or an exception passes
through a :class:`Redactor` before it reaches a log line or an error message."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["REDACTED", "Redactor"]

REDACTED: Final = "[redacted]"

# A JWT anywhere (three base64url parts, the first starting with '{"' encoded), and bearer values.
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_BEARER: Final = re.compile(r"(?i)(bearer\s+)\S+")


class Redactor:
    """Replaces known secrets (passwords, tokens) and anything shaped like a token."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        """Remember a secret to redact (short values are ignored: they would mangle text)."""
        if secret and len(secret) >= 4:
            self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _JWT.sub(REDACTED, text)
        return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)

    def __repr__(self) -> str:
        return f"<Redactor of {len(self._secrets)} secrets>"
