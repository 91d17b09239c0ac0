"""`tracker demo`: the embedded PostgreSQL, the sandbox vendors, the tracker, and a stream of
sample sends through every registered vendor in turn, printing transitions as consumers see them
and a summary at the end. Stops after --seconds or on Ctrl-C."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import secrets
import shutil
import signal
import sys
import time

import asyncpg
import orjson

from tracker import logging as tlog
from tracker.db import queries as q
from tracker.db.embedded import EmbeddedPostgres
from tracker.db.state_dir import StateDirError
from tracker.config_types import VENDORS, Config, DatabaseConfig, HttpConfig, LogConfig, VendorConfig
from tracker.sandbox.client import send_many
from tracker.sandbox.server import VENDOR_CLASSES, Sandbox
from tracker.start_error import StartError

STATE_DIR = "./var/demo"
STATE_DIR_HINT = ("\n(the demo keeps its database in ./var/demo, under the directory it runs in: "
                  "run it where the cluster's user can reach, e.g. a clone under /opt or /srv, or "
                  "`chmod o+x` each directory above)")
DEMO_CONSUMER = "demo"  # the demo reads events as this consumer
SCALE = 0.1  # the sandbox's vendor world runs ten times faster than real time


def _fresh_state_dir() -> None:
    """Each demo starts from an empty database: the last run's messages belonged to a sandbox
    that is gone. A cluster left running by a killed demo is stopped first."""
    if os.path.isdir(STATE_DIR):
        EmbeddedPostgres(STATE_DIR).stop()
        shutil.rmtree(STATE_DIR)
    os.makedirs(STATE_DIR)


def demo_config(sandbox: Sandbox) -> Config:
    vendors = {}
    for v in VENDORS:
        vendors[v] = VendorConfig.from_keys(
            v, **sandbox.vendor_config(v), postback_token=secrets.token_urlsafe(16),
            first_poll_s=1.0, max_poll_interval_s=4.0, tracking_window_s=30.0,
            deadline_margin_s=2.0, expected_final_s=10.0, rate_limit_per_s=50.0)
    return Config(database=DatabaseConfig(state_dir=STATE_DIR),
                  http=HttpConfig(listen="127.0.0.1:0"),
                  log=LogConfig(level="warning"), vendors=vendors)


async def _send_stream(sandbox: Sandbox, conn: asyncpg.Connection, rate: float,
                       push_urls: dict[str, str], stop: asyncio.Event) -> int:
    rnd = random.Random(1)
    sent = 0
    for i, vendor in zip(itertools.count(), itertools.cycle(VENDORS)):
        if stop.is_set():
            return sent
        n = rnd.choice((1, 1, 2, 3))
        fake = VENDOR_CLASSES[vendor]
        recipients = [fake.SAMPLE_NUMBER.format(rnd.randrange(10**7)) for _ in range(n)]
        if rnd.random() < 0.1:
            recipients[-1] = "12"  # a number no vendor takes: rejected at once
        # A vendor told where to push with each send gets the URL on its single sends.
        single = n == 1 or not fake.BULK_SEND
        push = push_urls[vendor] if fake.PUSH_URL == "per_send" and single else None
        with contextlib.suppress(Exception):  # a send the sandbox refused is the app's problem
            calls = await send_many(sandbox, vendor, recipients, bulk=n > 1, client_push_url=push)
            await conn.executemany(
                q.DEMO_SUBMIT,
                [(c.vendor, f"demo-{i}", orjson.dumps(c.request).decode(),
                  orjson.dumps(c.response).decode()) for c in calls])
            sent += len(recipients)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0 / rate)
    return sent


async def _print_events(conn: asyncpg.Connection, stop: asyncio.Event, t0: float) -> int:
    wake = asyncio.Event()
    listener = lambda *_: wake.set()  # noqa: E731
    await conn.add_listener("tracker_events", listener)
    try:
        return await _print_loop(conn, stop, t0, wake)
    finally:
        await conn.remove_listener("tracker_events", listener)


async def _print_loop(conn: asyncpg.Connection, stop: asyncio.Event, t0: float,
                      wake: asyncio.Event) -> int:
    shown = 0
    while True:
        events = await conn.fetch(q.READ_EVENTS, DEMO_CONSUMER, 200)
        for e in events:
            who = e["vendor_ref"] if e["vendor"] != "sparrow" else f"{e['vendor_ref'][:8]}…/{e['recipient']}"
            why = f"  [{e['failure_code']}: {e['failure_reason']}]" if e["failure_code"] else ""
            fix = "  (correction)" if e["is_correction"] else ""
            print(f"{time.monotonic() - t0:6.1f}s  {e['vendor']:<12} {who:<36} "
                  f"{e['from_state']:>9} -> {e['to_state']:<9} via {e['source']}{why}{fix}",
                  flush=True)
        if events:
            await conn.execute(q.ACK_EVENTS, DEMO_CONSUMER, events[-1]["event_id"])
            shown += len(events)
            continue
        if stop.is_set():
            return shown
        wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), 0.5)


async def _summary(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(q.DEMO_SUMMARY)
    cols = ["vendor", "total", "in_flight", "delivered", "read", "failed", "rejected", "expired", "unknown"]
    print("\n" + "  ".join(f"{c:>10}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]!s:>10}" for c in cols))
    problems = await conn.fetchval(q.COUNT_INTAKE_PROBLEMS)
    print(f"\nintake problems: {problems} (SELECT * FROM tracker.intake_problems)")


async def run_demo(seconds: float, rate: float) -> int:
    from tracker.app import Tracker

    tlog.configure("warning", "console" if sys.stderr.isatty() else "json")
    try:
        _fresh_state_dir()
    except StateDirError as e:  # another demo runs there
        print(f"demo cannot start: {e}", file=sys.stderr)
        return 2
    sandbox = Sandbox(seed=42, knobs={"time_scale": SCALE, "latency_s": 20.0, "deadline_s": 60.0,
                                      "duplicate_share": 0.1, "out_of_order_share": 0.1})
    await sandbox.start()
    config = demo_config(sandbox)
    tracker = Tracker(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: its terminal gone
        loop.add_signal_handler(sig, stop.set)
    try:
        await tracker.start()
    except StartError as e:  # one line, as `tracker run` says it; nothing left running
        await tracker.stop()
        await sandbox.stop()
        print(f"demo cannot start: {e}" + (STATE_DIR_HINT if e.key == "database.state_dir" else ""),
              file=sys.stderr)
        return e.code
    host, port = tracker.listen_addresses["listen"]
    push_base = f"http://{host}:{port}/postbacks"
    push_urls = {v: f"{push_base}/{v}/{c.postback_token}" for v, c in config.vendors.items()}
    for v, fake in VENDOR_CLASSES.items():
        if fake.PUSH_URL == "account":  # one URL set on the vendor's account
            sandbox.set_postback_url(v, push_urls[v])
    print(f"demo: tracker on {push_base.rsplit('/', 1)[0]}, sandbox vendors on {sandbox.url}; "
          f"{rate:g} sends/s for {seconds:g}s (Ctrl-C stops)\n", flush=True)
    t0 = time.monotonic()
    try:
        async with tracker.pool.acquire() as send_conn, tracker.pool.acquire() as read_conn:
            sender = asyncio.create_task(_send_stream(sandbox, send_conn, rate, push_urls, stop))
            printer = asyncio.create_task(_print_events(read_conn, stop, t0))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
            stop.set()
            sent = await sender
            await asyncio.sleep(1.0)  # let the last reports land
            shown = await printer
            print(f"\n{sent} messages sent, {shown} transitions shown")
            await _summary(read_conn)
    finally:
        await tracker.stop()
        await sandbox.stop()
    return 0


def main(args) -> int:
    if getattr(args, "config", None):  # `tracker --config F demo`: it would be ignored without a word
        print("demo: takes no configuration (--config): it makes its own, for the sandbox's "
              "vendors on its embedded database", file=sys.stderr)
        return 2
    if os.environ.get("TRACKER_CONFIG"):
        print("demo: TRACKER_CONFIG is not read: the demo makes its own configuration",
              file=sys.stderr)
    return asyncio.run(run_demo(args.seconds, args.rate))
