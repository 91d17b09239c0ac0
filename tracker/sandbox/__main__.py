"""`python -m tracker.sandbox` (and `tracker sandbox`): run the fake vendors until SIGINT/SIGTERM.

    python -m tracker.sandbox --host 127.0.0.1 --port 9100 --knobs '{"time_scale": 0.01}' \
        --postback-url skycore=http://127.0.0.1:8080/postbacks/skycore/TOKEN

`--knobs` takes a JSON object (or @FILE): knobs for every vendor at the top level and
`"vendors": {"skycore": {...}}` per vendor. It prints one JSON object with the base URLs and the
credentials the fake vendors expect, then serves.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Sequence

import orjson

from tracker.sandbox.server import VENDORS, Sandbox


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tracker sandbox", description="Fake SMS vendors on loopback.")
    p.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9100, help="port (default 9100, 0: any free)")
    p.add_argument("--knobs", default=None, help="JSON object of knobs, or @FILE")
    p.add_argument("--seed", type=int, default=None, help="seed for deterministic randomness")
    p.add_argument("--postback-url", action="append", default=[], metavar="VENDOR=URL",
                   help="account-wide postback URL (skycore, sparrow); repeatable")
    return p


async def serve(args: argparse.Namespace) -> int:
    sandbox = Sandbox(seed=args.seed)
    if args.knobs:
        raw = args.knobs
        if raw.startswith("@"):
            with open(raw[1:], "rb") as fh:
                raw = fh.read()
        sandbox.configure(orjson.loads(raw))
    for item in args.postback_url:
        vendor, sep, url = item.partition("=")
        if not sep:
            raise ValueError(f"--postback-url {item!r}: expected VENDOR=URL")
        sandbox.set_postback_url(vendor, url)
    await sandbox.start(args.host, args.port)
    info = {"url": sandbox.url,
            "vendors": {v: sandbox.vendor_config(v) for v in VENDORS}}
    sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sandbox.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(serve(args))
    except (ValueError, OSError, orjson.JSONDecodeError) as exc:
        sys.stderr.write(f"tracker sandbox: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
