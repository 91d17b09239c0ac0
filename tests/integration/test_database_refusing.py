"""A database that answers but refuses work for want of resources (SQLSTATE class 53: its disk
full). Its reads still answer, so /readyz said ready and tracker_database_up 1 while every
postback was answered 503, for as long as the disk stayed full. Now /readyz names the database
and what it said, the gauge is 0 (TrackerDatabaseDown), and both clear once it takes work again.
The refusal is PostgreSQL's own error, raised by a real trigger on the real write path."""
from __future__ import annotations

import orjson

from tests.polling_support import wait_until
from tests.postbacks_support import config_for, named, postback_url, readyz, running, session
from tracker import db, metrics

JSON = {"Content-Type": "application/json"}
FULL = """
CREATE FUNCTION tracker.disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not extend file "base/16384/16559": No space left on device'
        USING ERRCODE = 'disk_full';
END $$;
CREATE TRIGGER disk_full BEFORE INSERT ON tracker.postbacks FOR EACH ROW EXECUTE FUNCTION tracker.disk_full();
"""


def delivered(ref: str) -> bytes:
    return orjson.dumps({"origin": "SMS_MT", "code": "N202", "status": "Delivered",
                         "to": "10000000001", "tracking-id": ref})


async def test_a_database_refusing_writes_for_want_of_space_is_named_and_counted_down(db_dsn, monkeypatch):
    monkeypatch.setattr(db, "WANTING_S", 1.0)
    monkeypatch.setattr(db, "_wanting", {"at": float("-inf"), "what": ""})  # this test's alone
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        await tr.pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('skycore', 'full-0')")
        assert (await readyz(s, base))[0] == 200
        await tr.pool.execute(FULL)
        async with s.post(postback_url(base, "skycore"), data=delivered("full-0"), headers=JSON) as r:
            assert r.status == 503  # the vendor retries: never refused for good
        status, body = await readyz(s, base)
        [reason] = named(body, "database")
        assert status == 503 and "want of resources" in reason and "No space left on device" in reason
        assert metrics.database_up._value.get() == 0

        await tr.pool.execute("DROP TRIGGER disk_full ON tracker.postbacks")  # space freed
        async with s.post(postback_url(base, "skycore"), data=delivered("full-0"), headers=JSON) as r:
            assert r.status == 200

        async def ready() -> bool:
            return (await readyz(s, base))[0] == 200

        await wait_until(ready, 10)
        assert metrics.database_up._value.get() == 1
