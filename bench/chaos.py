"""Fault scenarios against the sandbox's ground truth: one command, loopback only, stops by itself.

    .venv/bin/python bench/chaos.py            # every scenario, full load (about 15 minutes)
    .venv/bin/python bench/chaos.py --short    # CI: a smaller load, the scenarios that pass
    .venv/bin/python bench/chaos.py --only kill-9,db-crash

Each scenario runs a private PostgreSQL cluster's database, the sandbox's five fake vendors and
`tracker run` (each in its own process) under a realistic mixed load (bench/_chaos/load.py),
with a consumer reading events, and one fault (bench/_chaos/scenarios.py). It prints one row
per scenario; every figure marked (0) must be zero, and the exit code is 1 when one is not.
What each fault does and what the tracker does about it: docs/chaos.md.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _chaos.env import Cluster  # noqa: E402
from _chaos.fuzz import FUZZ  # noqa: E402
from _chaos.run import Run  # noqa: E402
from _chaos.spec import FULL, SHORT, Result  # noqa: E402
from _chaos.scenarios import SCENARIOS  # noqa: E402

ALL = [*SCENARIOS, FUZZ]
SHORT_SET = ("kill-9", "db-crash", "malformed", "fuzz")
HEAD = ("scenario", "messages", "postbacks 200", "lost (0)", "dup transitions (0)",
        "wrong final (0)", "events re-read/missed (0)", "other (0)", "recovery s",
        "poll rate / limit")


def cells(r: Result) -> list[str]:
    other = sum(r.other.values())
    rate = "-"
    if any(got for got, _ in r.rates.values()):
        vendor, (got, limit) = max(r.rates.items(), key=lambda kv: kv[1][0] / kv[1][1])
        rate = f"{got / limit:.2f}x ({vendor} {got:.0f}/{limit:.0f})"
        if "rate" in r.informational:
            rate += ", informational" + (": over 1.1x" if got / limit > 1.1 else "")
    return [r.title, str(r.messages), str(r.postbacks_200), str(r.lost), str(r.duplicates),
            str(r.wrong), str(r.consumer), str(other),
            "-" if r.recovery_s is None else f"{r.recovery_s:.1f}", rate]


def table(results: list[Result]) -> str:
    rows = [list(HEAD)] + [cells(r) for r in results]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("---" for _ in HEAD) + "|")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    size = SHORT if args.short else FULL
    wanted = args.only.split(",") if args.only else (SHORT_SET if args.short else [s.key for s in ALL])
    chosen = [s for s in ALL if s.key in wanted]
    unknown = set(wanted) - {s.key for s in ALL}
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}; "
              f"known: {', '.join(s.key for s in ALL)}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="tracker-chaos-logs-"))
    cluster = Cluster()
    began = time.monotonic()
    results: list[Result] = []
    print(f"chaos: {size.name} form, {len(chosen)} scenarios, {os.cpu_count()} CPUs, loopback; "
          f"configured limits (req/s) {size.limits}; logs in {work}", flush=True)
    try:
        await cluster.start()
        for i, sc in enumerate(chosen):
            run = Run(sc, size, cluster, work, args.seed + i)
            r = await run.execute()
            results.append(r)
            flag = "FAIL" if r.failed else "ok"
            print(f"  {flag:4} {sc.title}: {r.seconds:.0f} s; " + "; ".join(
                [*r.details, *(f"{k}: {v}" for k, v in r.other.items() if v)]), flush=True)
    finally:
        await asyncio.to_thread(cluster.stop)
    print()
    print(table(results))
    for sc in chosen:
        if sc.note:
            print(f"- {sc.title}: {sc.note}")
    failed = [r.title for r in results if r.failed]
    print(f"\n{len(results)} scenarios in {time.monotonic() - began:.0f} s; "
          + (f"FAILED: {', '.join(failed)}" if failed else "all allowed-zero figures are zero"))
    if failed or args.keep_logs:
        print(f"daemon logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true", help="CI form: smaller load, fewer scenarios")
    p.add_argument("--only", default="", help="comma-separated scenario keys: "
                   + ", ".join(s.key for s in ALL))
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--keep-logs", action="store_true", help="keep the daemons' logs")
    return p.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
