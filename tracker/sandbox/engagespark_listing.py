"""engageSPARK's message list (`GET /v1/organizations/{orgId}/messages/`): which messages one
answer holds, from its query. Pure, so that the paging rules read in one place.

`after` is a message id or an RFC 3339 time; `limit` (<= 100) pages by `after`, `page` (from 1)
and `size` (<= 1000) page by number; `dir` asc | desc; `failed`, `startDate`, `endDate` filter.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from tracker.sandbox.truth import Message

FAILED = ("failed", "expired", "rejected", "retrying", "telco_retrying")


class BadQuery(ValueError):
    """A query the vendor answers with 400 invalid_parameter; `context` names the parameter."""

    def __init__(self, text: str, **context: Any) -> None:
        super().__init__(text)
        self.context = context


@dataclass
class Page:
    messages: Sequence[Message]
    more: bool
    next_page: Any  # the last id (pass it as `after`) or the next page number
    paged: bool


def page_of(order: Sequence[Message], positions: Mapping[str, int], q: Mapping[str, str],
            now: float) -> Page:
    """`order`: accepted messages, oldest first; `positions`: ref -> index in `order`."""
    try:
        paged = "page" in q or "size" in q
        page, size, limit = int(q.get("page", "1")), int(q.get("size", "100")), int(q.get("limit", "100"))
        start, end = _when(q.get("startDate")), _when(q.get("endDate"))
    except ValueError:
        raise BadQuery("invalid query parameter") from None
    if page < 1:
        raise BadQuery("page must be >= 1", param="page")
    if not 1 <= size <= 1000:
        raise BadQuery("size must be between 1 and 1000", param="size")
    if not 1 <= limit <= 100:
        raise BadQuery("limit must be between 1 and 100", param="limit")
    direction = q.get("dir", "asc").lower()
    if direction not in ("asc", "desc"):
        raise BadQuery("dir must be asc or desc", param="dir")
    items = order if direction == "asc" else order[::-1]  # filtered below into new lists
    if after := q.get("after"):
        items = _after(order, positions, items, after, direction)
    if start is not None:
        items = [m for m in items if m.wall0 >= start]
    if end is not None:
        items = [m for m in items if m.wall0 < end]
    if q.get("failed", "").lower() in ("1", "true", "yes"):
        items = [m for m in items if m.state_at(now)[0] in FAILED]
    if paged:
        more = len(items) > page * size
        return Page(items[(page - 1) * size: page * size], more, page + 1 if more else None, True)
    chunk = items[:limit]
    more = len(items) > limit
    return Page(chunk, more, chunk[-1].ref if more and chunk else None, False)


def _after(order: Sequence[Message], positions: Mapping[str, int], items: Sequence[Message],
           after: str, direction: str) -> Sequence[Message]:
    try:
        t_after = _when(after)
    except ValueError:
        t_after = None
    if t_after is not None:
        return [m for m in items if m.wall0 > t_after]
    pos = positions.get(after.strip().upper())
    if pos is None:
        return []
    return order[pos + 1:] if direction == "asc" else order[:pos][::-1]


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
