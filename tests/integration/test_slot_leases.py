"""A vendor's concurrency holds for the whole deployment, exactly: each replica runs at most as
many polls at once as it holds of the vendor's slots in PostgreSQL, under a lease
(tracker.poller.slot_leases, sql/016_vendor_slots.sql). Replicas are Pollers in one process on
a real database, time a ManualClock; a replica's polls in flight are slots it has entered."""
from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest
import structlog

from tests.integration.test_poller_in_process import (
    Vendors,
    config,
    make_messages,
    messages,
)
from tests.polling_support import poller_on
from tracker.poller.clock import ManualClock
from tracker.poller.shared_limits import NoSlot, Slots, fair_target
from tracker.poller.slot_leases import (
    NO_SLOT_WARN_S,
    RENEW_EVERY_S,
    VALID_S,
    lease_s,
)
from tracker.poller.transport import MockTransport
from tracker.poller.worker import IDLE_MAX_S

VENDOR = "sparksender"
AWAY = "postgresql://tracker@127.0.0.1:1/none"  # nothing listens there: the database away


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
async def replicas(pool, clock):
    """make(concurrency, n): n replicas polling VENDOR, none holding a slot yet."""
    made = []

    def make(concurrency: int, n: int, vendors: Vendors | None = None):
        cfg = config(concurrency=concurrency)
        answers = vendors or Vendors(clock)
        ps = [poller_on(cfg, pool, clock=clock, transport=lambda _: MockTransport(answers))
              for _ in range(n)]
        for p in ps:
            p.take_on(VENDOR)
        made.extend(ps)
        return ps

    yield make
    for p in made:
        await p.workers[VENDOR].close()


async def flush(p) -> None:
    """What the daemon does every few seconds: the poll counters (which say that this replica
    polls), and every second: the slots."""
    await p.flush_health()
    await p.leases.flush()


async def settle(ps) -> None:
    """Flush every replica three times round: a replica that took every slot while alone
    lowers its limit at the first, gives back at the second, the others take at the third."""
    for _ in range(3):
        for p in ps:
            await flush(p)


def slots(p) -> Slots:
    return p.workers[VENDOR].slots


def targets(ps, concurrency: int) -> list[int]:
    names = sorted(p.owner for p in ps)
    return [fair_target(concurrency, len(ps), names.index(p.owner)) for p in ps]


async def live(pool) -> dict[str, int]:
    """Slots held under a lease not ended, per replica."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT replica, count(*) FROM tracker.vendor_slots"
                                " WHERE vendor = $1 AND lease_until > now() GROUP BY replica",
                                VENDOR)
    return dict(rows)


async def check(pool, ps, concurrency: int) -> None:
    """No replica uses (or may start) more polls than it holds slots in the database."""
    held = await live(pool)
    for p in ps:
        s = slots(p)
        assert max(s.used, s.allowed()) <= held.get(p.owner, 0), (p.owner, s.used, s.allowed(), held)
    assert sum(held.values()) <= concurrency
    assert sum(slots(p).allowed() for p in ps) <= concurrency


async def test_three_replicas_with_concurrency_4_never_run_more_than_4(pool, replicas):
    ps = replicas(4, 3)
    rng = random.Random(11)
    for _ in range(200):  # flushes (alone or together) and polls starting and ending, mixed
        p = rng.choice(ps)
        s, roll = slots(p), rng.random()
        if roll < 0.35:
            await flush(p)
        elif roll < 0.5:
            await asyncio.gather(*(flush(r) for r in ps))  # at the same time
        elif roll < 0.8 and s.used < s.allowed():
            await s.__aenter__()  # a poll starts
        elif s.used:
            await s.__aexit__(None, None, None)  # a poll ends
        await check(pool, ps, 4)
    for p in ps:
        while slots(p).used:
            await slots(p).__aexit__(None, None, None)
    await settle(ps)
    await check(pool, ps, 4)
    assert [slots(p).allowed() for p in ps] == targets(ps, 4)
    assert sorted(targets(ps, 4)) == [1, 1, 2]
    held = await live(pool)
    assert [held.get(p.owner, 0) for p in ps] == targets(ps, 4)


async def test_a_replica_left_without_a_slot_claims_and_polls_nothing(pool, clock, replicas):
    vendors = Vendors(clock)
    ps = replicas(2, 3, vendors)  # more replicas than slots: one gets none
    await make_messages(pool, ps[0].config, VENDOR, 3)
    with structlog.testing.capture_logs() as logs:
        await settle(ps)
    assert sorted(slots(p).allowed() for p in ps) == [0, 1, 1]
    idle = next(p for p in ps if slots(p).allowed() == 0)
    assert any(e["event"].startswith("more replicas poll the vendor") for e in logs)
    assert await idle.workers[VENDOR].tick() == IDLE_MAX_S
    assert vendors.log == [] and all(r["lease_owner"] is None for r in await messages(pool, VENDOR))
    busy = next(p for p in ps if slots(p).allowed() == 1)
    assert await busy.workers[VENDOR].tick() == 0.0
    assert len(vendors.status_calls("sparksender.test")) == 3


async def test_a_replica_that_cannot_renew_stops_before_its_lease_ends(pool, clock, replicas):
    (p,) = replicas(4, 1)
    w = p.workers[VENDOR]
    away = await asyncpg.create_pool(AWAY, min_size=0, max_size=1)
    try:
        sent = clock.monotonic()
        await flush(p)
        assert slots(p).allowed() == 4
        async with pool.acquire() as conn:
            db_lease_s = await conn.fetchval(
                "SELECT extract(epoch FROM min(lease_until) - now()) FROM tracker.vendor_slots"
                " WHERE replica = $1", p.owner)
        local_s = slots(p).valid_until - sent
        # Here the lease ends a request timeout and more before it does in the database (which
        # counts from when the statement ran, after it was sent): a request sent just before
        # has ended when another replica may take the slot.
        assert local_s == VALID_S
        assert local_s + w.cfg.request_timeout_s < lease_s(w.cfg) <= float(db_lease_s) + 0.5
        p.leases.pool = lambda: away  # renewals fail from now on
        with structlog.testing.capture_logs() as logs:
            while clock.monotonic() + RENEW_EVERY_S < sent + local_s:
                clock.advance(RENEW_EVERY_S)
                await flush(p)
                assert slots(p).allowed() == 4  # still within the lease
            assert any(e["event"].startswith("concurrency slots not renewed") for e in logs)
            clock.advance(sent + local_s - clock.monotonic())  # the local lease's end
            assert slots(p).allowed() == 0 and w.gate() > 0  # not even a poll under way sends
            assert (await live(pool))[p.owner] == 4  # while the database's lease still runs
            with pytest.raises(NoSlot):
                await slots(p).__aenter__()
            await flush(p)
            assert any(e["log_level"] == "error" and "lease ran out" in e["event"] for e in logs)
        await make_messages(pool, p.config, VENDOR, 2)
        assert await w.tick() == IDLE_MAX_S  # claims nothing it could not poll
        assert all(r["lease_owner"] is None for r in await messages(pool, VENDOR))
        p.leases.pool = lambda: pool  # the database is back
        await flush(p)
        assert slots(p).allowed() == 4
    finally:
        await away.close()


async def test_a_stopped_replicas_slots_are_taken_by_the_others(pool, replicas):
    ps = replicas(4, 3)
    await settle(ps)
    first, rest = ps[0], ps[1:]
    assert slots(first).allowed() > 0
    await first.stop()  # gives its slots back
    assert first.owner not in await live(pool) and slots(first).allowed() == 0
    for _ in range(2):
        for p in rest:
            await flush(p)
            await check(pool, rest, 4)
    assert [slots(p).allowed() for p in rest] == [2, 2]


async def test_a_killed_replicas_slots_are_taken_once_their_lease_ends(pool, replicas):
    ps = replicas(3, 2)
    await settle(ps)
    dead, alive = ps
    lost = slots(dead).allowed()
    assert lost > 0
    await flush(alive)
    assert slots(alive).allowed() == 3 - lost  # its target: the dead one still counts
    async with pool.acquire() as conn:  # the dead one's lease and counters have run out
        await conn.execute("UPDATE tracker.vendor_slots SET lease_until = now() - interval '1 s'"
                           " WHERE replica = $1", dead.owner)
        await conn.execute("UPDATE tracker.poll_stats SET updated_at = now() - interval '1 min'"
                           " WHERE replica = $1", dead.owner)
    await flush(alive)
    assert slots(alive).allowed() == 3 and (await live(pool)) == {alive.owner: 3}


async def test_a_shrinking_replica_gives_back_only_what_it_no_longer_uses(pool, clock, replicas):
    first, second = replicas(4, 2)
    await flush(first)
    a = slots(first)
    for _ in range(4):
        await a.__aenter__()  # four polls in flight
    with structlog.testing.capture_logs() as logs:
        await flush(second)  # all four are held: none for it yet
        assert slots(second).allowed() == 0
        await flush(first)
        mine = targets([first, second], 4)[0]
        assert a.allowed() == mine and (await live(pool))[first.owner] == 4  # still in use
        await check(pool, [first, second], 4)
        clock.advance(NO_SLOT_WARN_S)
        await flush(second)
        assert slots(second).allowed() == 0
    assert any(e["log_level"] == "warning" and e["event"].startswith("no concurrency slot")
               for e in logs)  # none for longer than a flush: said
    await flush(first)  # all four still in use: kept
    assert (await live(pool))[first.owner] == 4
    for _ in range(4 - mine):
        await a.__aexit__(None, None, None)
    await flush(first)  # given back, now that they are not in use
    assert (await live(pool))[first.owner] == mine
    await flush(second)
    assert slots(second).allowed() == 4 - mine
    await check(pool, [first, second], 4)


async def test_polls_that_start_while_a_flush_is_under_way_keep_their_slots(pool, replicas):
    first, second = replicas(4, 2)
    await flush(first)
    await flush(second)  # first's part is about to shrink; second holds none yet
    a = slots(first)
    assert a.allowed() == 4 and a.used == 0
    await first.flush_health()  # the poll counters (this replica polls), not the slots
    # Three polls start while first's statement is on its way (the limit is still 4 then):
    starting = [asyncio.create_task(a.__aenter__()) for _ in range(3)]
    await first.leases.flush()
    await asyncio.gather(*starting)
    assert a.used == 3 and a.allowed() == targets([first, second], 4)[0]
    await check(pool, [first, second], 4)  # the three are still covered in the database
    await flush(second)
    await check(pool, [first, second], 4)


async def test_two_replicas_reaching_for_one_free_slot_at_once_never_both_hold_it(pool, replicas):
    a, b = replicas(2, 2)
    async with pool.acquire() as conn:  # both counted as polling; the slots' rows there, free
        await conn.executemany("INSERT INTO tracker.poll_stats (vendor, replica) VALUES ($1, $2)",
                               [(VENDOR, p.owner) for p in (a, b)])
        await conn.execute("INSERT INTO tracker.vendor_slots (vendor, slot)"
                           " SELECT $1, g FROM generate_series(0, 1) g", VENDOR)
    async with pool.acquire() as gate, pool.acquire() as watch:
        tx = gate.transaction()
        await tx.start()
        await gate.execute("SELECT 1 FROM tracker.vendor_slots FOR UPDATE")
        # Both statements see slot 0 free and reach for it; the first to commit has it.
        flushes = asyncio.gather(a.leases.flush(), b.leases.flush())
        await waiting_on_slot_locks(watch, 2)  # (seen from outside the transaction)
        await tx.commit()
        await flushes
    await check(pool, [a, b], 2)
    assert sorted(slots(p).allowed() for p in (a, b)) == [0, 1]
    for p in (a, b):
        await p.leases.flush()
    assert [slots(p).allowed() for p in (a, b)] == [1, 1]
    await check(pool, [a, b], 2)


async def waiting_on_slot_locks(conn, n: int, timeout: float = 4.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                               " AND query LIKE '%tracker.vendor_slots%'") >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the flushes never waited on the slots' rows")
