"""The chaos load sends numbers every vendor refuses at send, recognises each refusal in the
vendor's answer (bench/_chaos/load.py: refused), writes those calls' raw responses, and the
suite judges each refusal without a vendor id by (vendor, recipient) against the tracker's
messages (checks.final_states): a tracker that lost or misstated them once scored zero.
Here on the sandbox over HTTP and the real intake on PostgreSQL."""
from __future__ import annotations

import sys
from pathlib import Path

import aiohttp

from tracker.config_types import Config
from tracker.intake import take_in
from tracker.sandbox import Sandbox, send_many

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _chaos import checks  # noqa: E402
from _chaos.load import INSERT, Load  # noqa: E402

SHORT, LONG = "9000123", "6391000000000456"  # 7 digits, 16 digits: refused everywhere
BULK = {"sparksender": True, "engagespark": True, "sparrow": True, "skycore": False,
        "twilio": False}


async def test_refusals_at_send_are_judged_by_vendor_and_recipient(pool) -> None:
    load = Load({}, "", lambda v: "", rate=1.0, seed=1)
    async with Sandbox(knobs={"time_scale": 1.0}, seed=3) as sb, aiohttp.ClientSession() as http:
        for i, (vendor, bulk) in enumerate(BULK.items()):
            valid = f"63917123{i:04d}" if vendor != "sparrow" else f"97798000{i:04d}"
            for call in await send_many(sb, vendor, [valid, SHORT, LONG], bulk=bulk, session=http):
                load._rows(call)
        # a Sparrow compose with no valid number at all: refused without a batch
        [none_valid] = await send_many(sb, "sparrow", ["97712"], bulk=True, session=http)
        load._rows(none_valid)
        truth = [{"vendor": k[0], "vendor_ref": k[1], "recipient": k[2], **t}
                 for k, t in sb.truth().items()]
    # refused inside a Sparrow batch is keyed by the batch, like its accepted numbers
    assert {k[2] for k in load.keys if k[0] == "sparrow"} == {"977980000002", SHORT, LONG}
    assert load.refused == {(v, n) for v in BULK if v != "sparrow" for n in (SHORT, LONG)} | {
        ("sparrow", "97712")}
    # a call with a refusal goes in as its raw response, never as vendor_ref + recipient rows
    assert all(r.recipient not in (SHORT, LONG) for r in load.queue if r.response is None)
    async with pool.acquire() as conn:
        await conn.executemany(INSERT, [r.args() for r in load.queue])
        await take_in(conn, Config())
        refused_only = {k for k in load.keys if k[2] in (SHORT, LONG)}
        got = await checks.final_states(conn, truth, refused_only, load.refused)
        assert (got.messages, got.bad) == (11, 0), got.examples

        # a tracker that misstates one refusal, and one that lost one (its row names another)
        await conn.execute("UPDATE tracker.messages SET state = 'failed'"
                           " WHERE vendor = 'twilio' AND recipient LIKE $1", f"%{SHORT}")
        await conn.execute("UPDATE tracker.messages SET recipient = '1'"
                           " WHERE vendor = 'skycore' AND recipient LIKE $1", f"%{LONG}")
        got = await checks.final_states(conn, truth, refused_only, load.refused)
        assert (got.wrong, got.missing, got.extra) == (1, 1, 1), got.examples
        assert got.by_kind == {"twilio rejected->failed": 1, "skycore missing": 1}
