"""How the CLI shows things: JSON for programs, aligned tables for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import Enum
from typing import Any

import click

from multibackend.model import Page, Stream

__all__ = ["echo_json", "format_table", "page_dict", "stream_detail", "stream_table"]

#: Columns of the stream list table, in order.
LIST_COLUMNS = ("id", "status", "pinned", "platform", "source", "city", "title", "link")
_MAX_CELL = 48


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON (non-JSON values as their string)."""
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def page_dict(page: Page[Stream]) -> dict[str, Any]:
    """A list page as JSON-ready data: the items and the server's pagination meta."""
    return {
        "items": [stream.to_dict() for stream in page.items],
        "page": page.page,
        "per_page": page.per_page,
        "total_count": page.total_count,
        "total_pages": page.total_pages,
    }


def cell(value: object, limit: int = _MAX_CELL) -> str:
    """One table cell: ``-`` for nothing, ``yes``/``no`` for booleans, long text shortened."""
    if value is None or value == "":
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, Enum):
        text = str(value.value)
    else:
        text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, headers upper-cased."""
    texts = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in texts:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in texts)
    return "\n".join(line.rstrip() for line in lines)


def stream_table(page: Page[Stream]) -> str:
    """A list page as a table with a footer giving the position in the list."""
    rows = [
        (s.id, s.status.value, s.is_pinned, s.platform, s.source, s.city, s.title, s.link)
        for s in page.items
    ]
    footer = (
        f"page {page.page} of {page.total_pages} · {len(page.items)} shown · "
        f"{page.total_count} stream{'s' if page.total_count != 1 else ''} in all"
    )
    if not rows:
        return f"no streams on this page\n{footer}"
    return f"{format_table(LIST_COLUMNS, rows)}\n{footer}"


def stream_detail(stream: Stream) -> str:
    """One stream as aligned ``field  value`` lines, every field shown."""
    data = stream.to_dict()
    user = data.pop("user")
    if user is not None:
        data["user"] = f"{user['email']} (id {user['id']})"
    width = max(len(k) for k in data)
    return "\n".join(f"{k.ljust(width)}  {cell(v, 200)}" for k, v in data.items())
