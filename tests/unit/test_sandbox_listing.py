"""The sandbox's engageSPARK message list (tracker.sandbox.engagespark_listing), without I/O:
following `nextPage` from any page size visits every message once, in order, either way round;
bad parameters are refused with the parameter named."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from tracker.sandbox.engagespark_listing import BadQuery, page_of
from tracker.sandbox.truth import Message

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


def messages(n: int) -> tuple[list[Message], dict[str, int]]:
    order = [Message("engagespark", f"SMS-{i:04d}", "639170000000", False, "delivered", "",
                     [(0.0, "accepted"), (1.0, "failed" if i % 3 == 0 else "delivered")],
                     0.0, T0 + timedelta(seconds=i)) for i in range(n)]
    return order, {m.ref: i for i, m in enumerate(order)}


@given(n=st.integers(0, 60), limit=st.integers(1, 100), desc=st.booleans())
def test_following_next_page_visits_every_message_once_in_order(n, limit, desc):
    order, positions = messages(n)
    query, seen = {"limit": str(limit), "dir": "desc" if desc else "asc"}, []
    while True:
        page = page_of(order, positions, query, now=5.0)
        assert len(page.messages) <= limit and not page.paged
        seen += page.messages
        if not page.more:
            break
        query = {**query, "after": page.next_page}
    assert seen == (order[::-1] if desc else order)


@given(n=st.integers(0, 60), size=st.integers(1, 30))
def test_numbered_pages_cover_every_message_once(n, size):
    order, positions = messages(n)
    seen, number = [], 1
    while number is not None:
        page = page_of(order, positions, {"page": str(number), "size": str(size)}, now=5.0)
        assert page.paged
        seen += page.messages
        number = page.next_page
    assert seen == order


def test_filters_by_time_and_outcome():
    order, positions = messages(10)
    after = (T0 + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
    page = page_of(order, positions, {"after": after, "failed": "true"}, now=5.0)
    assert [m.ref for m in page.messages] == ["SMS-0006", "SMS-0009"]
    assert page_of(order, positions, {"failed": "true"}, now=0.5).messages == []  # not failed yet
    assert page_of(order, positions, {"after": "SMS-9999"}, now=5.0).messages == []


@pytest.mark.parametrize("query, param", [
    ({"limit": "101"}, "limit"), ({"size": "0"}, "size"), ({"page": "0"}, "page"),
    ({"dir": "up"}, "dir"), ({"limit": "x"}, None), ({"startDate": "yesterday"}, None)])
def test_bad_parameters_are_refused_by_name(query, param):
    order, positions = messages(3)
    with pytest.raises(BadQuery) as refused:
        page_of(order, positions, query, now=0.0)
    assert refused.value.context.get("param") == param
