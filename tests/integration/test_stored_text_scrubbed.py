"""A vendor that echoes the key it was sent does not put it into the database: polls store
observations (raw answer, words, failure), messages and transitions with registered secrets
masked (tracker.db.rows), also when the vendor's words were cut inside the key."""
from __future__ import annotations

import dataclasses

import orjson
import pytest

from tests.integration.test_poller_in_process import (  # noqa: F401 - fixtures
    clock, config, make_messages, vendors, worker_of)
from tracker import logging as tlog
from tracker.adapters.base import HttpResponse
from tracker.poller.transport import MockTransport

KEY = "SECRET-canary-123"  # a fake API key, recognizable wherever it leaks


pytestmark = pytest.mark.usefixtures("no_secrets_registered")


def keyed(vendor: str):
    """The test config with `vendor`'s API key KEY, registered as tracker.config.load() does."""
    cfg = config()
    vendors_ = dict(cfg.vendors)
    vendors_[vendor] = dataclasses.replace(vendors_[vendor], api_key=KEY)
    tlog.register_secret(KEY, sent=True)
    return dataclasses.replace(cfg, vendors=vendors_)


async def rows_of(pool, sql: str) -> list[str]:
    async with pool.acquire() as conn:
        return [orjson.dumps(dict(r)).decode() for r in await conn.fetch(sql)]


async def test_an_answer_echoing_the_key_is_stored_masked(pool, clock, worker_of):
    cfg = keyed("sparksender")
    await make_messages(pool, cfg, "sparksender", 1)
    w = worker_of("sparksender", cfg)

    def echo(req):  # a vendor (or its gateway) that echoes the request's parameters
        return HttpResponse(200, {}, orjson.dumps({"sms_status": 2, "request": dict(req.params)}))

    w.client.transport = MockTransport(echo)
    await w.tick()
    async with pool.acquire() as conn:
        [raw] = await conn.fetchval("SELECT array_agg(raw::text) FROM tracker.observations"
                                    " WHERE source = 'poll'")
    assert KEY not in raw and orjson.loads(raw)["request"]["api_key"] == "***"


async def test_failure_words_echoing_the_key_are_stored_masked(pool, clock, vendors, worker_of):
    cfg = keyed("engagespark")
    await make_messages(pool, cfg, "engagespark", 1)
    vendors.engagespark_body = {"deliveredToTelco": False, "done": True,
                                "error": f"rejected: unknown sender for key {KEY}"}
    await worker_of("engagespark", cfg).tick()
    stored = (await rows_of(pool, "SELECT text, failure_reason, raw FROM tracker.observations"
                                    " WHERE source = 'poll'")
              + await rows_of(pool, "SELECT state, failure_reason FROM tracker.messages")
              + await rows_of(pool, "SELECT to_state, failure_reason FROM tracker.transitions"
                                    " WHERE to_state = 'failed'"))
    assert len(stored) == 3 and all("unknown sender for key ***" in r for r in stored)
    assert not any(KEY[:6] in r for r in stored)


async def test_lookup_words_cut_inside_the_key_are_stored_masked(pool, clock, vendors, worker_of):
    cfg = keyed("engagespark")
    await make_messages(pool, cfg, "engagespark", 1)
    vendors.engagespark_status = 404  # the vendor does not know the id, and says so at length
    vendors.engagespark_error = "no such message for token " + "x" * 164 + " " + KEY
    await worker_of("engagespark", cfg).tick()
    async with pool.acquire() as conn:
        [text] = await conn.fetchval("SELECT array_agg(text) FROM tracker.observations"
                                     " WHERE source = 'poll'")
    assert text.startswith("no such message for token xxx") and text.endswith(" ***")
    assert KEY[:6] not in text
