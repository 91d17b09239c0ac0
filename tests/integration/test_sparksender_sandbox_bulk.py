"""The Spark Sender sandbox over loopback: a bulk call refused whole ({"status_code": 216} for a
blocked word, 209 for an empty message) refuses every number it named, in the ground truth and
as the adapter reads the answer with its request."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.integration.test_sandbox import FAST, sandbox
from tracker.adapters import sparksender as ss
from tracker.adapters.base import NO_REF
from tracker.core.states import State
from tracker.sandbox import send_many

NUMBERS = ["94711111111", "94773333333", "94752222222"]


@pytest.mark.parametrize("code,message", [(216, "Win at the Casino"), (209, " ")])
async def test_bulk_refused_whole_rejects_each_number(code: int, message: str) -> None:
    async with sandbox({**FAST, "blocked_words": ["casino"]}) as sb:
        [call] = await send_many(sb, "sparksender", NUMBERS, bulk=True, message=message)
        assert call.response == {"status_code": code}
        result = ss.parse_send(call.response, call.request, datetime.now(timezone.utc))
        assert result.account_error is None
        got = [(o.vendor_ref, o.recipient, o.state, o.code) for o in result.observations]
        assert got == [(NO_REF, n, State.rejected, str(code)) for n in NUMBERS]
        truth = sb.truth()
        for n in NUMBERS:
            t = truth[("sparksender", None, n)]
            assert (t["final"], t["code"]) == ("rejected", str(code))
