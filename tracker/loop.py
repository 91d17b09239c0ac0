"""The event loop the daemon runs on: uvloop where it is installed (a dependency: its I/O and
callbacks cost the postback route less CPU than asyncio's, docs/performance.md), else asyncio's.
`TRACKER_LOOP=asyncio` chooses asyncio's all the same (to compare, or to rule uvloop out).
The benches' bare baselines run on the same loop through this module."""
from __future__ import annotations

import asyncio
import os
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


def name() -> str:
    """"uvloop" or "asyncio": what run() uses here."""
    if os.environ.get("TRACKER_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the chosen loop."""
    if name() == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
