"""Every background task of a running tracker is supervised (docs/design.md#supervision): a fault injected into
each one is logged with the component's name, counted, the component starts again, /readyz
names it while it keeps failing and is ready again once it recovers; work waiting too long
makes /readyz 503 naming who should have done it. Real PostgreSQL, the daemon in-process."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
import warnings
from datetime import datetime, timezone

import asyncpg
import orjson
import pytest
import structlog

import tracker.postbacks.worker as postbacks_mod
from tests.faults_support import refusing
from tests.metrics_support import failures, metric
from tests.polling_support import wait_until
from tests.postbacks_support import config_for, named, readyz, running, session
from tracker import intake
from tracker.db import listen as db_listen
from tracker import logging as tlog
from tracker.app import Tracker
from tracker.poller.engine import VendorWorker
from tracker.postbacks.commit import GroupCommit
from tracker.upkeep import Upkeep


class InjectedFault(Exception):
    """The fault a test puts into a component."""


class Switch:
    """A fault that can be armed and disarmed; `calls` counts the calls it saw armed."""

    def __init__(self) -> None:
        self.armed = True
        self.calls = 0

    def wrap(self, real):
        async def faulty(*args, **kwargs):
            if self.armed:
                self.calls += 1
                raise InjectedFault(f"injected #{self.calls}")
            return await real(*args, **kwargs)
        return faulty


def health_config(dsn: str, **health):
    config = config_for(dsn, sparksender={"base_url": "http://127.0.0.1:9"})  # polled, never called
    values = {"restart_backoff_max_s": 0.2, "failures_before_unready": 2, **health}
    return dataclasses.replace(config, health=dataclasses.replace(config.health, **values))


async def run_sweep_now(tr: Tracker, job_id: str) -> None:
    tr.scheduler.get_job(job_id).modify(next_run_time=datetime.now(timezone.utc))


# Per component: how to inject the fault (before the tracker starts, so that it is in place
# from its first run), and how to make the component run again when it does not by itself.
def inject_intake(monkeypatch, fault: Switch) -> None:
    monkeypatch.setattr(intake, "take_in", fault.wrap(intake.take_in))


def inject_listener(monkeypatch, fault: Switch) -> None:
    real, faulty = db_listen.listen_on, fault.wrap(db_listen.listen_on)

    async def listen_on(conn, channel, *args, **kwargs):  # the intake's listener only
        return await (faulty if channel == "tracker_intake" else real)(conn, channel, *args, **kwargs)

    monkeypatch.setattr(db_listen, "listen_on", listen_on)


def inject_poll(monkeypatch, fault: Switch) -> None:
    monkeypatch.setattr(VendorWorker, "tick", fault.wrap(VendorWorker.tick))


def inject_postbacks(monkeypatch, fault: Switch) -> None:
    monkeypatch.setattr(postbacks_mod, "process_pending", fault.wrap(postbacks_mod.process_pending))


def inject_group_commit(monkeypatch, fault: Switch) -> None:
    monkeypatch.setattr(GroupCommit, "_batches", fault.wrap(GroupCommit._batches))


def inject_sweep(monkeypatch, fault: Switch) -> None:
    monkeypatch.setattr(Upkeep, "adopt_orphans", fault.wrap(Upkeep.adopt_orphans))


def upkeep(tr: Tracker) -> Upkeep:
    return next(c for c in tr.components if isinstance(c, Upkeep))


CASES = {
    "intake": (inject_intake, None),
    "intake-listener": (inject_listener, None),
    "poll:sparksender:0": (inject_poll, None),
    "postbacks": (inject_postbacks, None),
    "postbacks-commit": (inject_group_commit, None),  # it ran outside the supervisor: a bug
    # there answered every postback 503 for good while /readyz said ready
    "sweep:orphans": (inject_sweep, "orphans"),
}
# Components that share one injected fault: a vendor's poll loops.
FAMILY = {"poll:sparksender:0": ("poll:sparksender:0", "poll:sparksender:1"),
          "intake": ("intake", "intake:1")}


@pytest.mark.parametrize("component", list(CASES))
async def test_a_failing_component_is_logged_counted_restarted_and_reported(
        component, db_dsn, monkeypatch):
    inject, job_id = CASES[component]
    fault = Switch()
    inject(monkeypatch, fault)
    family = FAMILY.get(component, (component,))
    before = sum(failures(c) for c in family)
    with structlog.testing.capture_logs() as logs:
        async with running(health_config(db_dsn)) as (tr, base), session() as s:
            async def failing_and_reported() -> bool:
                if job_id:
                    await run_sweep_now(tr, job_id)  # a sweep runs again on its schedule
                status, body = await readyz(s, base)
                return status == 503 and bool(named(body, component))

            await wait_until(failing_and_reported, 10, step=0.2)
            status, body = await readyz(s, base)
            assert body["status"] == "unready"
            assert "times in a row; last: InjectedFault: injected #" in named(body, component)[0]
            assert fault.calls >= 2  # it was started again after failing
            fault.armed = False

            async def recovered() -> bool:
                if job_id:
                    await run_sweep_now(tr, job_id)
                return await readyz(s, base) == (200, {"status": "ready"})

            await wait_until(recovered, 10, step=0.2)
            calls = fault.calls
    failed = [e for e in logs if e.get("event") == "component failed" and e["component"] in family]
    assert len(failed) == calls  # once per failure
    assert all(isinstance(e["exc_info"], InjectedFault) and e["log_level"] == "error" for e in failed)
    assert component in {e["component"] for e in failed}
    assert sum(failures(c) for c in family) - before == calls
    # No one else logged the injected fault (apscheduler, asyncio, the component itself).
    others = [e for e in logs if e.get("event") != "component failed" and "injected #" in repr(e)]
    assert others == []


async def test_the_failure_is_one_json_line_with_the_traceback(db_dsn, monkeypatch):
    fault = Switch()
    inject_intake(monkeypatch, fault)
    out = io.StringIO()
    tlog.configure("info", "json", stream=out, cache=False)
    try:
        async with running(health_config(db_dsn)) as (tr, base):
            await wait_until(lambda: _true(fault.calls >= 2), 10, step=0.05)
            fault.armed = False
    finally:
        tlog.configure("info", "console", stream=sys.stderr, cache=False)
    lines = [orjson.loads(line) for line in out.getvalue().splitlines() if "injected #" in line]
    assert len(lines) == fault.calls
    for line in lines:
        assert line["event"] == "component failed" and line["component"] in ("intake", "intake:1")
        assert line["level"] == "error" and line["restart_in_s"] > 0
        assert "Traceback" in line["exception"] and "InjectedFault: injected #" in line["exception"]


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("created_at", ["now()", "'9999-01-01'"])  # the sender's to write
async def test_submissions_waiting_too_long_make_readyz_name_intake(db_dsn, monkeypatch, created_at):
    fault = Switch()
    inject_intake(monkeypatch, fault)
    config = health_config(db_dsn, intake_stall_s=0.3, failures_before_unready=1000)
    async with running(config) as (tr, base), session() as s:
        await tr.pool.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient, created_at)"
                              f" VALUES ('sparksender', 'stall-1', '639170000001', {created_at})")

        async def stalled() -> bool:
            status, body = await readyz(s, base)
            return status == 503 and any("oldest submission row" in r for r in named(body, "intake"))

        await wait_until(stalled, 10, step=0.1)
        assert metric("tracker_intake_oldest_age_seconds") > 0.3
        await upkeep(tr).count_backlog()
        assert metric("tracker_intake_waiting_rows") == 1
        fault.armed = False  # intake works again: the row goes in (ready from its first batch)
        await wait_until(lambda: _ready(s, base), 10, step=0.1)
        await wait_until(lambda: _none_waiting(tr), 10, step=0.05)
        await upkeep(tr).count_backlog()
        assert metric("tracker_intake_waiting_rows") == 0
        assert metric("tracker_intake_oldest_age_seconds") == 0


async def test_a_submission_row_held_locked_makes_readyz_name_intake_though_intake_is_busy(db_dsn):
    # Intake looks often (every 0.2 s here) and takes the rows behind: each look was progress,
    # so a head row another session held locked (a psql left in a transaction) never made
    # /readyz 503, however long it waited. The row is locked before the daemon starts: it
    # never gets a chance to take it in first.
    config = health_config(db_dsn, intake_stall_s=1.0)
    config = dataclasses.replace(config, intake=dataclasses.replace(config.intake,
                                                                    sweep_interval_s=0.2))
    holder = await asyncpg.connect(db_dsn)
    try:
        head = await holder.fetchval("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                                     " VALUES ('sparksender', 'held-1', '639170000001') RETURNING id")
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT FROM tracker.submissions WHERE id = $1 FOR UPDATE", head)
        async with running(config) as (tr, base), session() as s:
            await tr.pool.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                                  " VALUES ('sparksender', 'behind-1', '639170000002')")

            async def held_named() -> bool:
                status, body = await readyz(s, base)
                return status == 503 and any("held locked by another session" in r
                                             for r in named(body, "intake"))

            await wait_until(held_named, 10, step=0.1)
            assert await tr.pool.fetchval("SELECT processed_at IS NOT NULL FROM tracker.submissions"
                                          " WHERE vendor_ref = 'behind-1'")
            await held.rollback()  # the lock goes: the row is taken in, ready again
            await wait_until(lambda: _none_waiting(tr), 10, step=0.05)
            await wait_until(lambda: _ready(s, base), 10, step=0.1)
    finally:
        await holder.close()


async def test_a_database_error_that_is_no_outage_in_intake_is_the_supervisors(db_dsn):
    # PostgreSQL refusing the batch for a reason that is no row's (here: a trigger raising
    # 55000, object not in prerequisite state) is not an outage to wait out quietly: intake is
    # counted as failing and named by /readyz until the database takes the rows again.
    before = sum(failures(c) for c in FAMILY["intake"])
    refuse, allow = refusing("messages", "true", "55000", "not now")
    async with running(health_config(db_dsn)) as (tr, base), session() as s:
        await tr.pool.execute(refuse)
        try:
            await tr.pool.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                                  " VALUES ('sparksender', 'refused-1', '639170000001')")

            async def failing() -> bool:
                status, body = await readyz(s, base)
                return status == 503 and any("ObjectNotInPrerequisiteStateError" in r
                                             for c in FAMILY["intake"] for r in named(body, c))

            await wait_until(failing, 10, step=0.1)
            assert sum(failures(c) for c in FAMILY["intake"]) - before >= 2
        finally:
            await tr.pool.execute(allow)
        await wait_until(lambda: _none_waiting(tr), 10, step=0.05)
        await wait_until(lambda: _ready(s, base), 10, step=0.1)
        assert await tr.pool.fetchval("SELECT error FROM tracker.submissions") is None


async def _none_waiting(tr) -> bool:
    return not await tr.pool.fetchval("SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL")


async def _ready(s, base: str) -> bool:
    return (await readyz(s, base))[0] == 200


async def test_postbacks_not_applied_in_time_make_readyz_name_postbacks(db_dsn, monkeypatch):
    fault = Switch()
    inject_postbacks(monkeypatch, fault)
    config = health_config(db_dsn, postbacks_stall_s=0.3, failures_before_unready=1000)
    async with running(config) as (tr, base), session() as s:
        await tr.pool.execute(
            "INSERT INTO tracker.postbacks (vendor, method, content_type, query, body, received_at)"
            " VALUES ('skycore', 'POST', 'application/json', '', '{}', now())")

        async def stalled() -> bool:
            status, body = await readyz(s, base)
            return status == 503 and any("stored postback" in r for r in named(body, "postbacks"))

        await wait_until(stalled, 10, step=0.1)
        await upkeep(tr).count_backlog()
        assert metric("tracker_postbacks_waiting") == 1
        assert metric("tracker_postbacks_oldest_age_seconds") > 0.3
        fault.armed = False
        await wait_until(lambda: _ready(s, base), 15, step=0.1)


async def test_a_created_at_the_sender_wrote_cannot_break_the_age_of_what_waits(pool):
    # created_at is the sender's column: 'infinity' once made the age query raise, and /readyz
    # then blamed the database; a time in the future counts as now, '-infinity' as 2000-01-01.
    from tracker.db import queries as q
    sid = await pool.fetchval("INSERT INTO tracker.submissions (vendor, vendor_ref, created_at)"
                              " VALUES ('skycore', 'T', 'infinity') RETURNING id")
    for when, low, high in (("infinity", 0, 1), ("9999-01-01", 0, 1),
                            ("-infinity", 26 * 365 * 86400, 200 * 365 * 86400)):
        await pool.execute("UPDATE tracker.submissions SET created_at = $2::text::timestamptz"
                           " WHERE id = $1", sid, when)
        age = (await pool.fetchrow(q.OLDEST_WAITING))["intake_s"]
        assert low <= age < high, (when, age)


async def test_intake_counts_rows_taken_and_refused(db_dsn):
    taken, refused = (metric("tracker_intake_rows_total", result=r) for r in ("taken", "refused"))
    async with running(health_config(db_dsn)) as (tr, base):
        await tr.pool.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient) VALUES"
                              " ('sparksender', 'count-1', '639170000001'),"
                              " ('nosuchvendor', 'count-2', '639170000002')")

        async def done() -> bool:
            return not await tr.pool.fetchval(
                "SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL")

        await wait_until(done, 10, step=0.05)
    assert metric("tracker_intake_rows_total", result="taken") - taken == 1
    assert metric("tracker_intake_rows_total", result="refused") - refused == 1


async def test_the_daemons_orphan_sweep_adopts_recent_orphans_only(db_dsn):
    config = health_config(db_dsn)
    config = dataclasses.replace(config, intake=dataclasses.replace(config.intake,
                                                                    orphan_sweep_age_s=600.0))
    async with running(config) as (tr, base):
        await tr.pool.execute(
            "INSERT INTO tracker.observations (vendor, vendor_ref, source, state, code, received_at)"
            " VALUES ('skycore', 'OLD', 'postback', 'delivered', 'N202', now() - interval '2 days'),"
            "        ('skycore', 'NEW', 'postback', 'delivered', 'N202', now())")
        # Messages that appeared some other way (not through intake): only the sweep finds them.
        await tr.pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref)"
                              " VALUES ('skycore', 'OLD'), ('skycore', 'NEW')")
        await run_sweep_now(tr, "orphans")

        async def adopted() -> bool:
            return await tr.pool.fetchval(
                "SELECT state::text FROM tracker.messages WHERE vendor_ref = 'NEW'") == "delivered"

        await wait_until(adopted, 10, step=0.05)
        assert await tr.pool.fetchval(
            "SELECT state::text FROM tracker.messages WHERE vendor_ref = 'OLD'") == "submitted"


async def test_a_stopped_tracker_hands_its_connections_back_without_listeners(db_dsn):
    """asyncpg warns of a connection released with a listener still on it: the journal would show
    it at every stop, and the listener would have kept a stopped component's callback alive."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        async with running(health_config(db_dsn)) as (tr, base), session() as s:
            await wait_until(lambda: _ready(s, base), 10, step=0.05)  # every component at work
    left = [str(w.message) for w in seen if "listener" in str(w.message)]
    assert left == []


@pytest.mark.parametrize("lost", [False, True])
async def test_a_listening_connection_goes_back_to_the_pool_without_its_listener(pool, lost):
    """tracker.db.listen.unlisten, on a live connection and on one whose backend was killed (the
    database restarting): no listener is left for asyncpg to warn of, and the pool's next
    connection works."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        async with pool.acquire() as conn:
            callback = lambda *_: None  # noqa: E731
            await conn.add_listener("tracker_test_channel", callback)
            if lost:
                pid = conn.get_server_pid()
                async with pool.acquire() as other:
                    await other.execute("SELECT pg_terminate_backend($1)", pid)

                async def closed() -> bool:  # asyncpg sees the lost backend on its next use
                    with contextlib.suppress(*db_listen.DB_ERRORS):
                        await conn.execute("SELECT 1")
                    try:
                        return conn.is_closed()
                    except asyncpg.InterfaceError:  # the pool took the lost connection back
                        return True

                await wait_until(closed, 10, step=0.05)
            await db_listen.unlisten(conn, "tracker_test_channel", callback)
    assert [str(w.message) for w in seen if "listener" in str(w.message)] == []
    assert await pool.fetchval("SELECT 1") == 1


async def test_sigterm_stops_the_poller_claiming_before_the_other_parts_stop(db_dsn, monkeypatch):
    # The poller starts early, so it stops late: its loops went on claiming and calling vendors
    # through intake's, the listeners' and the sinks' stops ("claiming stops first").
    from tracker.poller.engine import Poller
    from tracker.sinks.component import Sinks
    seen: list[bool] = []
    real = Sinks.stop

    async def sinks_stop(self) -> None:
        poller = next(c for c in self.tracker.components if isinstance(c, Poller))
        seen.append(poller.stopping.is_set())
        await real(self)

    monkeypatch.setattr(Sinks, "stop", sinks_stop)
    async with running(health_config(db_dsn)):
        pass
    assert seen == [True]
