"""An older deployment speaks the integration guide's API: the backend notices (404 on today's
login path), switches for good, and works with its flat login and bare objects."""

from __future__ import annotations

from typing import Any

import pytest
from multibackend_streamsource.backend import StreamSourceBackend

from multibackend.errors import AuthenticationFailed, BackendError, NotFound
from multibackend.model import Platform, StreamDraft, StreamPatch, StreamQuery, StreamStatus


async def test_falls_back_to_the_guide_dialect_and_remembers(
    guide_server: Any, make_options: Any
) -> None:
    server, url = guide_server
    async with StreamSourceBackend("old", make_options(url)) as backend:
        created = await backend.create_stream(
            StreamDraft(source="alice", link="https://tiktok.com/@alice", platform="tiktok")
        )
        assert backend.dialect == "guide"
        # The guide's login body is flat.
        assert server.login_bodies == [
            {"email": "editor@example.com", "password": "Secret-Passw0rd"}
        ]
        # Bare objects are read, the stored spelling "TikTok" included.
        assert created.platform is Platform.TIKTOK
        assert created.user is not None
        assert created.user.email == "editor@example.com"

        fetched = await backend.get_stream(created.id)
        assert fetched == created
        updated = await backend.update_stream(
            created.id, StreamPatch(status="live", is_pinned=True)
        )
        assert updated.status is StreamStatus.LIVE
        assert updated.is_pinned is True
        page = await backend.list_streams(StreamQuery(per_page=10))
        assert [s.id for s in page.items] == [created.id]

        # A second login (the token was refused) goes straight to the guide's path.
        backend.auth.invalidate(await backend.auth.bearer())
        await backend.get_stream(created.id)
        await backend.delete_stream(created.id)
        with pytest.raises(NotFound) as caught:
            await backend.get_stream(created.id)
        assert caught.value.backend == "old"

    assert server.requests.count(("POST", "/api/v1/login")) == 1
    assert server.requests.count(("POST", "/api/v1/users/login")) == 2


async def test_wrong_password_on_the_guide_dialect_is_authentication_failed(
    guide_server: Any, make_options: Any
) -> None:
    _, url = guide_server
    async with StreamSourceBackend("old", make_options(url, password="Wrong-Passw0rd")) as b:
        with pytest.raises(AuthenticationFailed, match="refused the email or password") as c:
            await b.get_stream(1)
    assert "Wrong-Passw0rd" not in str(c.value)


async def test_no_login_path_at_all_says_to_check_base_url(
    guide_server: Any, make_options: Any
) -> None:
    _, url = guide_server
    async with StreamSourceBackend("nowhere", make_options(url + "/not-the-root")) as b:
        with pytest.raises(BackendError, match="check base_url") as caught:
            await b.get_stream(1)
    assert not caught.value.retryable
