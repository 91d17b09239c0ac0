"""The scenarios: each is the mixed load plus one fault, timed against the load's start.

Recovery is measured from the moment the fault is removed (the daemon restarted, the database
started, the vendor answering again, the credentials fixed; for the two replicas, the moment
one is killed) until the tracker is ready (/readyz 200) and caught up (no poll overdue, no
submission row or stored postback waiting, by more than 3 s)."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

from _chaos import checks
from _chaos.run import Run
from _chaos.spec import POLLED, Scenario


async def kill9(run: Run) -> None:
    """SIGKILL under load while the daemon holds poll claims and unapplied postbacks, then a
    restart (as systemd's Restart=on-failure would), `kills` times spread over the load; each
    kill waits until the tracker has recovered from the one before."""
    d = run.daemons[0]
    n = run.size.kills
    for i in range(n):
        await run.at(run.load_s * (i + 1) / (n + 1))
        await mid_work(run)
        t0 = time.monotonic()
        down = run.outage(d)
        await d.kill()
        await asyncio.sleep(0.5)
        await d.start()
        down.end = time.monotonic()  # start() returns once the daemon logged it is ready
        await run.recovery_from(t0)  # kill to caught up, the restart included


async def mid_work(run: Run, within_s: float = 3.0) -> None:
    """Wait (a little) for a moment when the daemons hold poll claims and have postbacks stored
    but not applied: a kill then strands the claims and leaves the rows to the recovery sweep."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await run.pool.fetchval(checks.MID_WORK):
            return
        await asyncio.sleep(0.005)


async def db_crash(run: Run) -> None:
    """PostgreSQL stopped in immediate mode (every server process gone at once: a crash) for
    10 s, then started again; it recovers from its WAL. The application and the consumer are
    quiet for the second before the crash, so that the last commits before it are the
    tracker's own (another session's synchronous commit would flush them too)."""
    await run.at(run.load_s * 0.4 - 1.0)
    run.load.quiet.set()
    run.consumer.quiet.set()
    await asyncio.sleep(1.0)
    down = run.outage()
    await run.cluster.crash()
    run.load.quiet.clear()
    run.consumer.quiet.clear()
    await asyncio.sleep(10)
    await run.cluster.restart()
    run.recovery_from(time.monotonic())
    await run.ready()  # until then the daemons may answer postbacks 503, as they should
    down.end = time.monotonic()


async def vendor_outage(run: Run) -> None:
    """engageSPARK answers nothing (every answer held past the tracker's timeout) for
    `fault_s`, then 500/502/503 for half as long, then recovers."""
    await run.at(run.load_s * 0.3)
    await run.sandbox.knobs(engagespark={"slow_share": 1.0, "slow_delay_s": 60.0})
    await asyncio.sleep(run.size.fault_s)
    await run.sandbox.knobs(engagespark={"slow_share": 0.0, "server_error_share": 1.0})
    await asyncio.sleep(run.size.fault_s / 2)
    await run.sandbox.knobs(engagespark={"server_error_share": 0.0})
    run.recovery_from(time.monotonic())


async def throttling(run: Run) -> None:
    """Every polled vendor answers 429 with Retry-After: beyond half the configured rate (its
    own limit, Retry-After the seconds until a token), and a fifth of requests at random
    (Retry-After 2 s); then recovers."""
    await run.at(run.load_s * 0.3)
    limits = {v: {"rate_limit_per_s": run.size.limits[v] / 2, "throttle_share": 0.2,
                  "retry_after_s": 2} for v in POLLED}
    await run.sandbox.knobs(**limits)
    await asyncio.sleep(run.size.fault_s)
    await run.sandbox.knobs(**{v: {"rate_limit_per_s": 0.0, "throttle_share": 0.0}
                               for v in POLLED})
    run.recovery_from(time.monotonic())


async def bad_credentials(run: Run) -> None:
    """Every polled vendor refuses the credentials (Spark Sender 6, engageSPARK 401, Sparrow
    login 401, Twilio 401) for `fault_s`, then accepts them again. No poll may change a message
    meanwhile (postbacks still do: they need no credentials). It begins after the first
    campaigns, so that many messages are in flight; the application's own sends fail meanwhile."""
    await run.at(run.load_s * 0.65)
    began = datetime.now(timezone.utc)
    await run.sandbox.knobs(**{v: {"bad_credentials": True} for v in POLLED})
    await asyncio.sleep(run.size.fault_s)
    ended = datetime.now(timezone.utc)
    await run.sandbox.knobs(**{v: {"bad_credentials": False} for v in POLLED})
    run.recovery_from(time.monotonic())
    # (a poll answered just before the change may be written up to a second later)
    obs, moves = await run.pool.fetchrow(checks.POLL_CHANGES, list(POLLED),
                                         began + timedelta(seconds=1), ended)
    run.result.details.append(f"during the account errors: {obs} poll observations, "
                              f"{moves} poll transitions")
    if obs or moves:
        run.other["poll changes during account errors"] = obs + moves


async def replica_killed(run: Run) -> None:
    """Two daemons share the database; A is killed with SIGKILL halfway and not restarted.
    The vendors' account-wide postback URLs move to B (as a load balancer's health check
    would); engageSPARK and Twilio sends name B from then on."""
    a, b = run.daemons
    await run.at(run.load_s * 0.5)
    await mid_work(run)
    t0 = time.monotonic()
    run.outage(a)  # for good: postbacks given A's URL go unanswered to the end
    await a.kill()
    run.killed.add(a.name)
    run.recovery_from(t0)
    await asyncio.sleep(0.5)
    for vendor in ("skycore", "sparrow"):
        await run.sandbox.postback_url(vendor, b.postback_url(vendor))


SCENARIOS = [
    Scenario("baseline", "baseline"),
    Scenario("kill-9", "kill -9", fault=kill9, window_s=25.0, load_scale=1.5),
    Scenario("db-crash", "database crash", fault=db_crash, window_s=30.0),
    Scenario("db-crash-async", "database crash, async commit", fault=db_crash, window_s=30.0,
             db_settings={"synchronous_commit": "off"},
             server_settings={"wal_writer_delay": "10000ms"},
             note="the database's default is synchronous_commit = off, and the WAL writer "
                  "flushes every 10 s (an asynchronous commit is lost in a crash up to 3 x "
                  "wal_writer_delay later); DESIGN §9: every transaction that leads to a 200 "
                  "or a transition commits with synchronous_commit on, whatever the default"),
    Scenario("vendor-outage", "vendor outage", fault=vendor_outage, window_s=35.0),
    Scenario("throttling", "vendor throttling", fault=throttling, window_s=30.0),
    Scenario("bad-credentials", "bad credentials", fault=bad_credentials, window_s=30.0),
    Scenario("malformed", "malformed answers", window_s=30.0,
             knobs={"malformed_share": 0.2,
                    "malformed_kinds": ["truncated", "html", "empty", "nul"]}),
    Scenario("two-replicas", "two replicas, one killed", fault=replica_killed, replicas=2,
             window_s=25.0,
             note="rate: two replicas together against one configured per-vendor limit "
                  "(judged at 1.1x, as for one replica)"),
]
