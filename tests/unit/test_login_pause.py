"""A vendor's login answered 503 with a long Retry-After pauses its polling no longer than any
other Retry-After does (max_poll_interval_s): Sparrow's login answered so with a day stopped its
polling for that day, the circuit closed and /readyz ready. The transport is a seam: no socket."""
from __future__ import annotations

import pytest

from tracker import adapters
from tracker.adapters.datatypes import HttpResponse
from tracker.config_types import VendorConfig
from tracker.http.errors import TransportError
from tracker.poller.client import TokenCache, VendorClient
from tracker.poller.clock import ManualClock


async def test_a_login_503_with_a_days_retry_after_pauses_no_longer_than_the_longest_poll_interval():
    async def day_off(req) -> HttpResponse:
        return HttpResponse(503, {"Retry-After": "86400"}, b"")

    cfg = VendorConfig.from_keys("sparrow", base_url="http://sparrow.invalid", api_token="t" * 20,
                                 partner_token="p" * 20, max_poll_interval_s=300.0)
    client = VendorClient(cfg, day_off, ManualClock())
    with pytest.raises(TransportError, match="login"):
        await TokenCache(adapters.for_config("sparrow", cfg), client).get()
    assert 0 < client.pause_left() <= 300.0
