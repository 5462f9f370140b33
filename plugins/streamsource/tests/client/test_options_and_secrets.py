"""Options bind from configuration with clear errors, and secrets never show: not in reprs, not
in exception texts, not in log lines (DEBUG included)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from multibackend_streamsource.backend import StreamSourceBackend
from multibackend_streamsource.options import Options

from multibackend.errors import AuthenticationFailed, ConfigError
from multibackend.model import StreamQuery
from multibackend.options import bind_options

PASSWORD = "Hunter2-Very-Secret"


def bind(**raw: Any) -> Options:
    return bind_options(Options, raw, where="backends.ss")


def test_defaults_and_budget() -> None:
    opts = bind(base_url="https://ss.example", email="a@b.c", password=PASSWORD)
    assert opts.requests_per_minute == 1000
    assert opts.rate_budget == (1000, 60.0)
    assert opts.verify_tls is True
    assert opts.max_rate_limit_wait == 60
    assert opts.per_page == 100
    windowed = bind(
        base_url="https://ss.example",
        token="t0ken-abc",
        rate_limit_requests=50,
        rate_limit_window=2,
    )
    assert windowed.rate_budget == (50, 2.0)
    assert windowed.has_credentials is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"email": "a@b.c", "password": PASSWORD}, "backends.ss.base_url: is required"),
        ({"base_url": "ftp://x", "token": "t0ken-abc"}, "http:// or https://"),
        ({"base_url": "https://x"}, "email and password, or a token"),
        ({"base_url": "https://x", "password": PASSWORD}, "email and password go together"),
        ({"base_url": "https://x", "token": "t0ken-abc", "per_page": 500}, "between 1 and 100"),
        ({"base_url": "https://x", "token": "t0ken-abc", "verify_tls": "no"}, "true or false"),
        ({"base_url": "https://x", "token": "t0ken-abc", "rate_limit_window": 5}, "together"),
    ],
)
def test_bad_options_name_the_key_and_hide_secrets(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        bind(**raw)
    assert PASSWORD not in str(caught.value)


def test_repr_hides_password_and_token(token_factory: Any) -> None:
    token = token_factory()
    opts = Options(base_url="https://ss.example", email="a@b.c", password=PASSWORD, token=token)
    assert PASSWORD not in repr(opts)
    assert token not in repr(opts)
    assert "a@b.c" in repr(opts)  # the rest is shown
    backend = StreamSourceBackend("ss", opts)
    assert PASSWORD not in repr(backend)
    assert token not in repr(backend)
    assert token not in repr(backend.auth)


async def test_verify_tls_off_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    opts = Options(base_url="https://ss.example", token="t0ken-abc", verify_tls=False)
    with caplog.at_level(logging.WARNING):
        async with StreamSourceBackend("ss", opts):
            pass
    assert any("verification is OFF" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        async with StreamSourceBackend("ss", Options(base_url="https://x", token="t0ken-abc")):
            pass
    assert not caplog.records


async def test_no_secret_in_logs_or_errors_of_a_refused_session(
    guide_server: Any, make_options: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password and a revoked token, logged at DEBUG: neither secret leaks."""
    _, url = guide_server
    caplog.set_level(logging.DEBUG)
    errors = []
    async with StreamSourceBackend("ss", make_options(url, password=PASSWORD)) as backend:
        try:
            await backend.get_stream(1)
        except AuthenticationFailed as exc:
            errors.append(exc)
    good = make_options(url)
    async with StreamSourceBackend("ss", good) as backend:
        token = await backend.auth.bearer()
        await backend.list_streams(StreamQuery(per_page=5))
        await backend.signup("someone@example.com", PASSWORD)
    assert errors
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [r.getMessage() for r in caplog.records]
    assert caplog.records, "expected DEBUG log lines"
    for text in texts:
        assert PASSWORD not in text
        assert good.password not in text
        assert token not in text


def test_the_registry_builds_the_backend_from_plain_options() -> None:
    from multibackend.registry import load_backend

    backend = load_backend(
        "streamsource",
        name="ss",
        base_url="http://127.0.0.1:1",
        email="a@b.c",
        password=PASSWORD,
        rate_limit_requests=5,
        rate_limit_window=1,
    )
    assert isinstance(backend, StreamSourceBackend)
    assert (backend.budget.limit, backend.budget.window) == (5, 1.0)
    assert PASSWORD not in repr(backend)
    with pytest.raises(ConfigError, match=r"backends\.ss\.pasword") as caught:
        load_backend("streamsource", name="ss", base_url="http://127.0.0.1:1", pasword=PASSWORD)
    assert PASSWORD not in str(caught.value)
