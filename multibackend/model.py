"""Value types shared by every backend: streams, drafts, patches, queries, pages and enums.

All types are frozen attrs classes. Input types (:class:`StreamDraft`, :class:`StreamPatch`,
:class:`StreamQuery`) check the StreamSource server's rules (contract §1.2, §2) when they are
built, so a bad value raises :class:`~multibackend.errors.ValidationFailed` naming the field and
the rule before any backend is called. :class:`Stream`, the read type, is lenient: it holds what
a backend has, including legacy rows that today's rules would refuse.

Enum values are the API's lower-case keys (``live``, ``tiktok``, ``vertical``, ``video``). Input
also accepts the server's stored spelling (``Live``, ``TikTok``) exactly, as the server does;
anything else is refused (the real server answers 500 for it, which would look transient).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any, Final, Generic, Literal, TypeVar

import attrs

from multibackend.errors import ValidationFailed

__all__ = [
    "PRESERVABLE_TIMESTAMPS",
    "STREAM_FIELDS",
    "UNSET",
    "WRITABLE_FIELDS",
    "Kind",
    "Orientation",
    "Page",
    "Platform",
    "Role",
    "Sort",
    "Stream",
    "StreamDraft",
    "StreamId",
    "StreamPatch",
    "StreamQuery",
    "StreamStatus",
    "UnsetType",
    "User",
    "check_link",
    "parse_enum",
    "utc_now",
]


class _Unset(Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset.UNSET
"""Marks a draft or patch field as "not given" (as opposed to None, "clear it")."""

UnsetType = Literal[_Unset.UNSET]

StreamId = int | str
"""A backend's own id for a stream: an integer for SQL and StreamSource, any string elsewhere."""


class StreamStatus(StrEnum):
    LIVE = "live"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


class Platform(StrEnum):
    TIKTOK = "tiktok"
    FACEBOOK = "facebook"
    TWITCH = "twitch"
    YOUTUBE = "youtube"
    INSTAGRAM = "instagram"
    OTHER = "other"


class Orientation(StrEnum):
    VERTICAL = "vertical"
    HORIZONTAL = "horizontal"


class Kind(StrEnum):
    VIDEO = "video"
    WEB = "web"
    OVERLAY = "overlay"
    BACKGROUND = "background"


class Role(StrEnum):
    DEFAULT = "default"
    EDITOR = "editor"
    ADMIN = "admin"


class Sort(StrEnum):
    """Explicit list orders. Without one, backends list pinned first, then newest first."""

    NAME = "name"
    NAME_DESC = "-name"
    CREATED = "created"
    CREATED_DESC = "-created"


# The server's stored spellings (Rails enum values), accepted on input exactly as the server does.
_DB_SPELLINGS: Final[dict[type[Enum], dict[str, str]]] = {
    StreamStatus: {"Live": "live", "Offline": "offline", "Unknown": "unknown"},
    Platform: {
        "TikTok": "tiktok",
        "Facebook": "facebook",
        "Twitch": "twitch",
        "YouTube": "youtube",
        "Instagram": "instagram",
        "Other": "other",
    },
}

E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")


def parse_enum(enum: type[E], value: object, field: str) -> E:
    """Return ``value`` as a member of ``enum``, or raise ValidationFailed naming ``field``.

    Accepts a member, its lower-case key, or the server's stored spelling (``Live``); nothing else.
    """
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        key = _DB_SPELLINGS.get(enum, {}).get(value, value)
        try:
            return enum(key)
        except ValueError:
            pass
    allowed = ", ".join(m.value for m in enum)
    raise ValidationFailed(f"{field}: {value!r} is not one of {allowed}", field=field, rule="enum")


# Ruby's URI::DEFAULT_PARSER.make_regexp(%w[http https]) as the server uses it: unanchored and
# case-sensitive, so the value passes when it contains "http:" or "https:" followed by a URI-ish
# character ("http://" alone passes, "HTTPS://X" and "example.com" fail).
_LINK_RE: Final = re.compile(r"https?:[/A-Za-z0-9\-_.!~*'();?:@&=+$,%]")


def check_link(value: object, field: str = "link") -> str:
    """Strip surrounding whitespace and check the server's http(s) URL rule; return the link."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValidationFailed(f"{field}: can't be blank", field=field, rule="required")
    if not isinstance(value, str):
        raise ValidationFailed(f"{field}: must be a string", field=field, rule="type")
    link = value.strip()
    if not _LINK_RE.search(link):
        raise ValidationFailed(
            f"{field}: must be a valid HTTP or HTTPS URL (got {link[:80]!r})",
            field=field,
            rule="http_url",
        )
    return link


def _check_source(value: object, field: str = "source") -> str:
    if value is None or value == "":
        raise ValidationFailed(f"{field}: can't be blank", field=field, rule="required")
    if not isinstance(value, str):
        raise ValidationFailed(f"{field}: must be a string", field=field, rule="type")
    if len(value) > 255:
        raise ValidationFailed(
            f"{field}: is too long (maximum is 255 characters, got {len(value)})",
            field=field,
            rule="max_length",
        )
    return value


def utc_now() -> datetime:
    """The current time in UTC, truncated to milliseconds (the server's precision)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValidationFailed(f"{field}: must be a datetime", field=field, rule="type")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationFailed(
            f"{field}: must be timezone-aware (got naive {value.isoformat()})",
            field=field,
            rule="timezone",
        )
    return value


def _text(value: object, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValidationFailed(f"{field}: must be a string or null", field=field, rule="type")


def _bool(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValidationFailed(f"{field}: must be true or false", field=field, rule="type")


@attrs.frozen(kw_only=True)
class User:
    """The owner of a stream as a backend reports it (StreamSource's nested ``user``)."""

    id: StreamId
    email: str
    role: str = "default"
    created_at: datetime | None = None
    updated_at: datetime | None = None


#: Every stream field a backend may store, in the server's serialization order (id and user aside).
STREAM_FIELDS: Final = (
    "source",
    "link",
    "status",
    "is_pinned",
    "created_at",
    "updated_at",
    "city",
    "state",
    "platform",
    "notes",
    "title",
    "last_checked_at",
    "last_live_at",
    "posted_by",
    "orientation",
    "kind",
)

#: Fields a client sets through the API (contract §1.2), ``is_pinned`` through the pin endpoints.
WRITABLE_FIELDS: Final = frozenset(
    {
        "source",
        "link",
        "status",
        "is_pinned",
        "platform",
        "orientation",
        "kind",
        "city",
        "state",
        "notes",
        "title",
        "posted_by",
    }
)

#: Server-managed timestamps that a backend storing them accepts on drafts and patches, so that
#: replication and backfill keep the source's values instead of stamping new ones.
PRESERVABLE_TIMESTAMPS: Final = frozenset({"last_checked_at", "last_live_at", "created_at"})


@attrs.frozen(kw_only=True)
class Stream:
    """A stream as a backend holds it.

    Lenient on purpose: legacy rows may break today's input rules (a NULL source, a link stored
    without its scheme) and must still be readable. Timestamps are timezone-aware when present.
    """

    id: StreamId
    source: str | None
    link: str
    status: StreamStatus = StreamStatus.UNKNOWN
    is_pinned: bool = False
    platform: Platform | None = None
    orientation: Orientation | None = None
    kind: Kind = Kind.VIDEO
    city: str | None = None
    state: str | None = None
    notes: str | None = None
    title: str | None = None
    posted_by: str | None = None
    last_checked_at: datetime | None = attrs.field(default=None)
    last_live_at: datetime | None = attrs.field(default=None)
    created_at: datetime | None = attrs.field(default=None)
    updated_at: datetime | None = attrs.field(default=None)
    user: User | None = None

    @last_checked_at.validator
    @last_live_at.validator
    @created_at.validator
    @updated_at.validator
    def _check_aware(self, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
        _aware(value, attribute.name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in the server's key order; timestamps as ISO 8601 strings."""
        out: dict[str, Any] = {"id": self.id}
        for name in STREAM_FIELDS:
            out[name] = _jsonable(getattr(self, name))
        out["user"] = (
            None
            if self.user is None
            else {k: _jsonable(v) for k, v in attrs.asdict(self.user, recurse=False).items()}
        )
        return out

    def to_draft(self, fields: Iterable[str] | None = None) -> StreamDraft:
        """A draft that would create this stream elsewhere, limited to ``fields`` when given.

        Raises ValidationFailed when the stream breaks today's input rules (legacy data).
        """
        keep = _draft_fields(fields)
        return StreamDraft(**{name: getattr(self, name) for name in keep})

    def to_patch(self, fields: Iterable[str] | None = None) -> StreamPatch:
        """A patch that brings another copy of this stream to this state over ``fields``."""
        keep = _draft_fields(fields)
        return StreamPatch(**{name: getattr(self, name) for name in keep})


def _draft_fields(fields: Iterable[str] | None) -> list[str]:
    allowed = WRITABLE_FIELDS | PRESERVABLE_TIMESTAMPS
    wanted = allowed if fields is None else set(fields) & allowed
    return [name for name in STREAM_FIELDS if name in wanted]


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Enum):
        return value.value
    return value


# --- input types -------------------------------------------------------------------------------
# Converters (named functions, as the attrs mypy plugin requires) transform values: enum parsing,
# link stripping. Validators only check, and know the field's name for the error.


def _given(value: Any) -> bool:
    return value is not UNSET


def _status(value: Any) -> StreamStatus | UnsetType:
    return value if value is UNSET else _required(StreamStatus, value, "status")


def _kind(value: Any) -> Kind | UnsetType:
    return value if value is UNSET else _required(Kind, value, "kind")


def _platform(value: Any) -> Platform | UnsetType | None:
    return value if value is UNSET else _nullable(Platform, value, "platform")


def _orientation(value: Any) -> Orientation | UnsetType | None:
    return value if value is UNSET else _nullable(Orientation, value, "orientation")


def _link(value: Any) -> str | UnsetType:
    return value if value is UNSET else check_link(value)


def _required(enum: type[E], value: object, field: str) -> E:
    if value is None or value == "":
        raise ValidationFailed(
            f"{field}: is not included in the list (null is not allowed)",
            field=field,
            rule="required",
        )
    return parse_enum(enum, value, field)


def _nullable(enum: type[E], value: object, field: str) -> E | None:
    # The server casts a blank string to null for enum columns.
    return None if value is None or value == "" else parse_enum(enum, value, field)


def _v_source(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if _given(value):
        _check_source(value, attribute.name)


def _v_text(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if _given(value):
        _text(value, attribute.name)


def _v_time(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if _given(value):
        _aware(value, attribute.name)


def _v_bool(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if _given(value):
        _bool(value, attribute.name)


class _Changes:
    """Shared behaviour of drafts and patches: which fields were given."""

    def given(self) -> dict[str, Any]:
        """The fields that were given (not UNSET), by name, in declaration order."""
        return {
            a.name: getattr(self, a.name)
            for a in attrs.fields(type(self))  # type: ignore[arg-type]
            if getattr(self, a.name) is not UNSET
        }


@attrs.frozen(kw_only=True)
class StreamDraft(_Changes):
    """A stream to create. ``source`` and ``link`` are required; every other field may be left
    UNSET (the backend's default applies: status unknown, kind video, not pinned) or, where the
    field is nullable, set to None. Enum fields accept members, keys (``"live"``) or the
    server's stored spelling (``"Live"``); the link is stripped of surrounding whitespace.

    ``last_checked_at``, ``last_live_at`` and ``created_at`` are preserved timestamps: a backend
    that stores them keeps the given value instead of stamping its own (replication, backfill);
    a backend that does not simply ignores them.
    """

    source: str = attrs.field(validator=_v_source)
    link: str = attrs.field(converter=check_link)
    status: StreamStatus | UnsetType = attrs.field(default=UNSET, converter=_status)
    is_pinned: bool | UnsetType = attrs.field(default=UNSET, validator=_v_bool)
    platform: Platform | UnsetType | None = attrs.field(default=UNSET, converter=_platform)
    orientation: Orientation | UnsetType | None = attrs.field(default=UNSET, converter=_orientation)
    kind: Kind | UnsetType = attrs.field(default=UNSET, converter=_kind)
    city: str | UnsetType | None = attrs.field(default=UNSET, validator=_v_text)
    state: str | UnsetType | None = attrs.field(default=UNSET, validator=_v_text)
    notes: str | UnsetType | None = attrs.field(default=UNSET, validator=_v_text)
    title: str | UnsetType | None = attrs.field(default=UNSET, validator=_v_text)
    posted_by: str | UnsetType | None = attrs.field(default=UNSET, validator=_v_text)
    last_checked_at: datetime | UnsetType | None = attrs.field(default=UNSET, validator=_v_time)
    last_live_at: datetime | UnsetType | None = attrs.field(default=UNSET, validator=_v_time)
    created_at: datetime | UnsetType | None = attrs.field(default=UNSET, validator=_v_time)


@attrs.frozen(kw_only=True)
class StreamPatch(_Changes):
    """A partial update. UNSET fields are left as they are; None clears a nullable field.

    ``source``, ``link``, ``status`` and ``kind`` cannot be cleared (the server refuses it with
    422); the patch refuses it first. Preserved timestamps behave as in :class:`StreamDraft`.
    """

    source: str | UnsetType = attrs.field(default=UNSET, validator=_v_source)
    link: str | UnsetType = attrs.field(default=UNSET, converter=_link)
    status: StreamStatus | UnsetType = attrs.field(default=UNSET, converter=_status)
    is_pinned: bool | UnsetType = attrs.field(default=UNSET, validator=_v_bool)
    platform: Platform | UnsetType | None = attrs.field(default=UNSET, converter=_platform)
    orientation: Orientation | UnsetType | None = attrs.field(default=UNSET, converter=_orientation)
    kind: Kind | UnsetType = attrs.field(default=UNSET, converter=_kind)
    city: str | UnsetType | None = attrs.field(default=UNSET, validator=_v_text)
    state: str | UnsetType | None = attrs.field(default=UNSET, validator=_v_text)
    notes: str | UnsetType | None = attrs.field(default=UNSET, validator=_v_text)
    title: str | UnsetType | None = attrs.field(default=UNSET, validator=_v_text)
    posted_by: str | UnsetType | None = attrs.field(default=UNSET, validator=_v_text)
    last_checked_at: datetime | UnsetType | None = attrs.field(default=UNSET, validator=_v_time)
    last_live_at: datetime | UnsetType | None = attrs.field(default=UNSET, validator=_v_time)
    created_at: datetime | UnsetType | None = attrs.field(default=UNSET, validator=_v_time)

    def is_empty(self) -> bool:
        """True when the patch changes nothing."""
        return not self.given()


def _page_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed("page: must be an integer", field="page", rule="type")
    if value < 1:
        raise ValidationFailed(f"page: must be >= 1 (got {value})", field="page", rule="min")
    return value


def _per_page(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed("per_page: must be an integer", field="per_page", rule="type")
    if not 1 <= value <= 100:
        raise ValidationFailed(
            f"per_page: must be between 1 and 100 (got {value})", field="per_page", rule="range"
        )
    return value


def _q_status(value: Any) -> StreamStatus | None:
    return None if value is None else parse_enum(StreamStatus, value, "status")


def _q_not_status(value: Any) -> StreamStatus | None:
    return None if value is None else parse_enum(StreamStatus, value, "not_status")


def _q_sort(value: Any) -> Sort | None:
    return None if value is None else parse_enum(Sort, value, "sort")


def _q_pinned(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _bool(value, "is_pinned")


def _q_user_id(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None or (isinstance(value, int | str) and not isinstance(value, bool)):
        return
    raise ValidationFailed("user_id: must be an integer or a string", field="user_id", rule="type")


def _q_page(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    _page_number(value)


def _q_per_page(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    _per_page(value)


@attrs.frozen(kw_only=True)
class StreamQuery:
    """What to list: filters (all optional, combined with AND), an order, and a page.

    Without ``sort``, backends order pinned first, then newest first (the server's default);
    explicit sorts do not put pinned streams first. ``page`` >= 1, 1 <= ``per_page`` <= 100.
    """

    status: StreamStatus | None = attrs.field(default=None, converter=_q_status)
    not_status: StreamStatus | None = attrs.field(default=None, converter=_q_not_status)
    is_pinned: bool | None = attrs.field(default=None, validator=_q_pinned)
    user_id: StreamId | None = attrs.field(default=None, validator=_q_user_id)
    sort: Sort | None = attrs.field(default=None, converter=_q_sort)
    page: int = attrs.field(default=1, validator=_q_page)
    per_page: int = attrs.field(default=25, validator=_q_per_page)

    @property
    def offset(self) -> int:
        """Rows to skip before this page."""
        return (self.page - 1) * self.per_page

    def matches(self, stream: Stream) -> bool:
        """True when ``stream`` passes this query's filters (order and page aside).

        The reference meaning of the filters, for backends that filter in Python.
        """
        if self.status is not None and stream.status != self.status:
            return False
        if self.not_status is not None and stream.status == self.not_status:
            return False
        if self.is_pinned is not None and stream.is_pinned != self.is_pinned:
            return False
        return not (
            self.user_id is not None
            and (stream.user is None or str(stream.user.id) != str(self.user_id))
        )


@attrs.frozen(kw_only=True)
class Page(Generic[T]):
    """One page of a list. ``total_pages`` = ceil(total_count / per_page), 0 when empty; a page
    past the end has no items and still reports the requested page (as the server does)."""

    items: tuple[T, ...]
    page: int
    per_page: int
    total_count: int
    total_pages: int

    @classmethod
    def build(cls, items: Iterable[T], query: StreamQuery, total_count: int) -> Page[T]:
        """Assemble a page for ``query`` with the server's meta arithmetic."""
        return cls(
            items=tuple(items),
            page=query.page,
            per_page=query.per_page,
            total_count=total_count,
            total_pages=math.ceil(total_count / query.per_page),
        )


def stream_from_mapping(data: Mapping[str, Any], *, id: StreamId) -> Stream:
    """Build a Stream from plain values (enums as their keys), for backends that store dicts."""
    kwargs = {k: data[k] for k in STREAM_FIELDS if k in data}
    for name, enum in (
        ("status", StreamStatus),
        ("platform", Platform),
        ("orientation", Orientation),
        ("kind", Kind),
    ):
        if kwargs.get(name) is not None:
            kwargs[name] = parse_enum(enum, kwargs[name], name)
    return Stream(id=id, user=data.get("user"), **kwargs)
