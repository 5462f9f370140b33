"""StreamSourceBackend: the StreamBackend over the StreamSource REST API.

Built by the registry as ``StreamSourceBackend(name, Options(...))`` (entry point
``streamsource``), or directly::

    async with StreamSourceBackend("ss", Options(base_url=..., email=..., password=...)) as ss:
        stream = await ss.create_stream(StreamDraft(source="a", link="https://x.test/a"))

What it stores: the fields a client can set through the API (contract §1.2), ``is_pinned``
included (through the pin endpoints). Server-managed timestamps and the owner are read, never
written; the preserved timestamps of a draft or patch are ignored (the server stamps its own).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import ClassVar, TypeVar

import attrs

from multibackend.backend import (
    BaseBackend,
    BulkImportResult,
    BulkItemError,
    Capability,
    ExportResult,
    Health,
    StreamAnalytics,
)
from multibackend.errors import (
    AuthenticationFailed,
    BackendError,
    NotFound,
    Unavailable,
    ValidationFailed,
)
from multibackend.model import (
    WRITABLE_FIELDS,
    Page,
    Sort,
    Stream,
    StreamDraft,
    StreamId,
    StreamPatch,
    StreamQuery,
    User,
)
from multibackend_streamsource.auth import Authenticator
from multibackend_streamsource.client import ApiClient, RetryPolicy
from multibackend_streamsource.options import Options as StreamSourceOptions
from multibackend_streamsource.ratelimit import RateBudget
from multibackend_streamsource.redact import Redactor
from multibackend_streamsource.serialization import (
    BadAnswer,
    analytics_from_json,
    bulk_result_from_json,
    draft_body,
    export_from_json,
    filter_params,
    page_from_json,
    patch_body,
    query_params,
    unwrap_stream,
    user_from_json,
)
from multibackend_streamsource.transport import Transport

__all__ = ["StreamSourceBackend"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_STREAMS = "/api/v1/streams"


class StreamSourceBackend(BaseBackend):
    """A StreamSource server as a multibackend backend. See the module docstring."""

    Options: ClassVar[type[StreamSourceOptions]] = StreamSourceOptions
    capabilities = frozenset(
        {
            Capability.PIN,
            Capability.EXPORT,
            Capability.BULK_IMPORT,
            Capability.ANALYTICS,
            Capability.HEALTH,
        }
    )
    fields = frozenset(WRITABLE_FIELDS)

    def __init__(self, name: str, options: StreamSourceOptions) -> None:
        super().__init__(name)
        self.options = options
        self._redactor = Redactor()
        self._redactor.add(options.password)
        self._redactor.add(options.token)
        limit, window = options.rate_budget
        self.budget = RateBudget(limit, window, backend=name)
        self._transport = Transport(
            backend=name,
            base_url=options.base_url,
            budget=self.budget,
            redactor=self._redactor,
            timeout=options.timeout,
            connect_timeout=options.connect_timeout,
            verify_tls=options.verify_tls,
            max_connections=options.max_connections,
            max_rate_limit_wait=options.max_rate_limit_wait,
        )
        self._client = ApiClient(
            backend=name,
            transport=self._transport,
            redactor=self._redactor,
            retry=RetryPolicy(
                max_retries=options.max_retries,
                backoff=options.retry_backoff,
                max_backoff=options.retry_max_backoff,
            ),
            max_rate_limit_wait=options.max_rate_limit_wait,
        )
        self.auth = Authenticator(
            backend=name,
            token=options.token,
            refresh_margin=options.refresh_margin,
            login=self._login if options.has_credentials else None,
        )
        self._client.attach(self.auth)
        #: The account the backend logged in as (after the first login), from the server.
        self.user: User | None = None

    def __repr__(self) -> str:
        return f"<StreamSourceBackend {self.name!r} at {self.options.base_url}>"

    @property
    def dialect(self) -> str:
        """``"current"`` or ``"guide"`` (the older API, after a 404 on today's login path)."""
        return self._client.dialect.name

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the HTTP session (no request is sent: login is lazy)."""
        await self._transport.open()

    async def close(self) -> None:
        await self._transport.close()

    async def _login(self) -> str:
        assert self.options.email is not None
        assert self.options.password is not None
        token, user = await self._client.login(self.options.email, self.options.password)
        if user is not None:
            self.user = user
        return token

    async def signup(self, email: str | None = None, password: str | None = None) -> User | None:
        """Create an account (by default the configured one) and return it as the server knows it.

        The server creates the account and then answers 500 (contract §1.1); so after a 500 this
        logs in with the new credentials to find out, and succeeds when the account works. An
        account created by signup has role ``default``: an admin must make it an editor before
        it can write. Raises ValidationFailed for the server's 422 (e.g. the email is taken).
        """
        email = email if email is not None else self.options.email
        password = password if password is not None else self.options.password
        if email is None or password is None:
            raise AuthenticationFailed(
                "signup needs an email and a password (none configured)", backend=self.name
            )
        self._redactor.add(password)
        try:
            resp = await self._client.signup(email, password)
        except Unavailable as exc:
            log.info(
                "backend %r: signup of %s answered an error (%s); checking whether the "
                "account was created anyway",
                self.name,
                email,
                exc.detail,
            )
            try:
                _, user = await self._client.login(email, password)
            except AuthenticationFailed:
                raise Unavailable(
                    f"sign up {email}: the server failed ({exc.detail}) and the account cannot "
                    "log in: it was not created; try again later",
                    backend=self.name,
                ) from None
            return user
        body = resp.body if isinstance(resp.body, dict) else {}
        raw_user = body.get("data") or body.get("user")
        return user_from_json(raw_user)

    # --- CRUD ----------------------------------------------------------------------------------

    async def create_stream(self, draft: StreamDraft) -> Stream:
        """Create; with ``is_pinned=True`` create, then pin (two calls: the server ignores
        ``is_pinned`` on create). If pinning fails, the error says the stream exists."""
        body = draft_body(draft, self.name)
        resp = await self._client.call(
            "POST", _STREAMS, what="create stream", json_body=body, idempotent=False
        )
        stream = self._read(resp.body, unwrap_stream, "create stream")
        if draft.is_pinned is True:
            stream = await self._pin_after_write(stream, True, "created")
        return stream

    async def get_stream(self, id: StreamId) -> Stream:
        path = self._path(id)
        resp = await self._client.call("GET", path, what=f"get stream {id}", id=id)
        return self._read(resp.body, unwrap_stream, f"get stream {id}")

    async def update_stream(self, id: StreamId, patch: StreamPatch) -> Stream:
        """Apply the patch's permitted fields, then pin or unpin when ``is_pinned`` is given.
        An empty patch reads the stream (NotFound if missing)."""
        body = patch_body(patch, self.name)
        path = self._path(id)
        stream: Stream | None = None
        if body:
            resp = await self._client.call(
                "PATCH", path, what=f"update stream {id}", json_body=body, id=id
            )
            stream = self._read(resp.body, unwrap_stream, f"update stream {id}")
        if patch.is_pinned is True or patch.is_pinned is False:
            if stream is None:
                return await self.set_pinned(id, patch.is_pinned)
            return await self._pin_after_write(stream, patch.is_pinned, "updated")
        return stream if stream is not None else await self.get_stream(id)

    async def delete_stream(self, id: StreamId) -> None:
        await self._client.call("DELETE", self._path(id), what=f"delete stream {id}", id=id)

    async def set_pinned(self, id: StreamId, pinned: bool) -> Stream:
        method = "PUT" if pinned else "DELETE"
        what = f"{'pin' if pinned else 'unpin'} stream {id}"
        resp = await self._client.call(method, self._path(id) + "/pin", what=what, id=id)
        if resp.body is None:  # older deployments answer 204 without a body
            return await self.get_stream(id)
        return self._read(resp.body, unwrap_stream, what)

    async def _pin_after_write(self, stream: Stream, pinned: bool, done: str) -> Stream:
        if stream.is_pinned == pinned:
            return stream
        try:
            return await self.set_pinned(stream.id, pinned)
        except BackendError as exc:
            # The write happened: say so, or a caller would repeat a create.
            action = "pinning" if pinned else "unpinning"
            raise _reworded(
                exc, f"stream {stream.id} was {done}, but {action} it failed: {exc.detail}"
            ) from exc

    # --- lists ---------------------------------------------------------------------------------

    async def list_streams(self, query: StreamQuery) -> Page[Stream]:
        params = query_params(query, self.name)
        try:
            resp = await self._client.call("GET", _STREAMS, what="list streams", params=params)
        except NotFound:
            if query.user_id is None:
                raise
            # The server answers 404 for a user_id it does not know: that user owns nothing.
            return Page.build((), query, 0)
        return self._read(resp.body, lambda body: page_from_json(body, query), "list streams")

    async def iter_streams(self, query: StreamQuery | None = None) -> AsyncIterator[Stream]:
        """Every stream matching the query's filters, ``per_page`` at a time; one page in memory.

        Without an explicit sort the walk orders by creation (oldest first), so streams created
        during the walk land after it instead of shifting pages under it.
        """
        base = query or StreamQuery()
        if base.sort is None:
            base = attrs.evolve(base, sort=Sort.CREATED)
        size = self.options.per_page
        page = 1
        while True:
            result = await self.list_streams(attrs.evolve(base, page=page, per_page=size))
            for stream in result.items:
                yield stream
            if len(result.items) < size or page >= result.total_pages:
                return
            page += 1

    # --- capabilities --------------------------------------------------------------------------

    async def bulk_import(self, drafts: Sequence[StreamDraft]) -> BulkImportResult:
        """Import in chunks of ``bulk_chunk_size``; each item independently, errors per item
        (indexes into ``drafts``). ``ids`` is None: the server does not say what it created.

        Every item is checked before the first chunk is sent. A chunk that fails as a whole
        (a server error) raises, saying how many items earlier chunks imported.
        """
        bodies = [draft_body(d, self.name) for d in drafts]
        size = self.options.bulk_chunk_size
        imported = 0
        errors: list[BulkItemError] = []
        for start in range(0, len(bodies), size):
            chunk = bodies[start : start + size]
            try:
                resp = await self._client.call(
                    "POST",
                    _STREAMS + "/bulk_import",
                    what=f"bulk import items {start}..{start + len(chunk) - 1}",
                    json_body={"streams": chunk},
                    idempotent=False,
                )
            except BackendError as exc:
                if start == 0:
                    raise
                raise _reworded(
                    exc,
                    f"{exc.detail} (items 0..{start - 1} were sent before: {imported} imported)",
                ) from exc
            result = self._read(
                resp.body, partial(bulk_result_from_json, offset=start), "bulk import"
            )
            imported += result.imported
            errors.extend(result.errors)
        return BulkImportResult(
            imported=imported, total=len(drafts), errors=tuple(errors), ids=None
        )

    async def export(self, query: StreamQuery | None = None) -> ExportResult:
        """Every stream matching the query's filters, as the export endpoint lists them.

        The endpoint (behind the ``stream_export`` flag: FeatureUnavailable when off) gives no
        ids, so the streams themselves come from a paged walk, kept when the export lists their
        (link, created_at to the second). Filters the endpoint lacks (is_pinned, user_id) are
        applied to the walk. A stream created or deleted between the two calls may be missing.
        """
        base = query or StreamQuery()
        params = filter_params(attrs.evolve(base, is_pinned=None, user_id=None), self.name)
        resp = await self._client.call(
            "GET", _STREAMS + "/export", what="export streams", params=params
        )
        exported_at, items = self._read(resp.body, export_from_json, "export streams")
        wanted = {(str(i.get("link")), str(i.get("created_at"))[:19]) for i in items}
        streams = []
        async for stream in self.iter_streams(attrs.evolve(base, sort=Sort.CREATED)):
            created = stream.created_at.isoformat()[:19] if stream.created_at else "None"
            if (stream.link, created) in wanted and base.matches(stream):
                streams.append(stream)
        return ExportResult(exported_at=exported_at, streams=tuple(streams))

    async def analytics(self, id: StreamId) -> StreamAnalytics:
        path = self._path(id) + "/analytics"
        resp = await self._client.call("GET", path, what=f"analytics of stream {id}", id=id)
        return self._read(resp.body, lambda body: analytics_from_json(body, id), "analytics")

    async def health(self) -> Health:
        """Whether the server answers ``/health`` and this backend can authenticate."""
        try:
            resp = await self._client.call("GET", "/health", what="health", authenticated=False)
            status = resp.body.get("status") if isinstance(resp.body, dict) else None
            await self.auth.bearer()
        except BackendError as exc:
            return Health(ok=False, detail=exc.detail)
        return Health(ok=True, detail=f"server {status or 'answered'}; authenticated")

    # --- helpers -------------------------------------------------------------------------------

    def _path(self, id: StreamId) -> str:
        text = str(id).strip() if isinstance(id, int | str) and not isinstance(id, bool) else ""
        if not text.isdecimal():
            raise NotFound(
                f"stream id {id!r} is not a StreamSource id (a positive integer)",
                backend=self.name,
                id=id,
            )
        return f"{_STREAMS}/{int(text)}"

    def _read(self, body: object, parse: Callable[[object], T], what: str) -> T:
        try:
            return parse(body)
        except BadAnswer as exc:
            raise Unavailable(
                f"{what}: unreadable answer ({exc.detail})", backend=self.name
            ) from None
        except ValidationFailed as exc:  # a timestamp or enum the model refuses
            raise Unavailable(
                f"{what}: unreadable answer ({exc.detail})", backend=self.name
            ) from None


def _reworded(exc: BackendError, detail: str) -> BackendError:
    """A copy of ``exc`` (same class, same attributes such as retry_at) with a new detail."""
    new = copy.copy(exc)
    new.detail = detail
    new.message = f"backend {exc.backend!r}: {detail}" if exc.backend else detail
    new.args = (new.message,)
    return new
