"""The webhook receiver of bench/sinks.py, in its own process (`python bench/_receiver.py`):
answers 204 to every POST /hook and notes when each event arrived (by its vendor_ref), for
GET /stats; POST /reset forgets them. `ReceiverProc` starts it and asks it."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import aiohttp
import orjson
from aiohttp import web

PY = sys.executable


def receiver_main() -> None:
    arrivals: list[tuple[float, str]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        arrivals.append((time.time(), orjson.loads(body)["data"]["vendor_ref"]))
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        refs = request.query.get("refs") == "1"
        times = [t for t, _ in arrivals]
        out = {"count": len(arrivals), "first": min(times, default=0), "last": max(times, default=0)}
        if refs:
            out["refs"] = {r: t for t, r in arrivals}
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def reset(_request: web.Request) -> web.Response:
        arrivals.clear()
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_get("/stats", stats)
        app.router.add_post("/reset", reset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(f"http://{host}:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class ReceiverProc:
    def __enter__(self) -> "ReceiverProc":
        self.proc = subprocess.Popen([PY, __file__], stdout=subprocess.PIPE, text=True)
        self.base = self.proc.stdout.readline().strip()
        self.url = self.base + "/hook"
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    async def stats(self, session: aiohttp.ClientSession, refs: bool = False) -> dict:
        async with session.get(self.base + "/stats", params={"refs": "1" if refs else "0"}) as r:
            return await r.json()

    async def reset(self, session: aiohttp.ClientSession) -> None:
        async with session.post(self.base + "/reset") as r:
            await r.read()

    async def until(self, session: aiohttp.ClientSession, n: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while (s := await self.stats(session))["count"] < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the receiver got {s['count']} of {n} within {timeout} s")
            await asyncio.sleep(0.05)
        return s


if __name__ == "__main__":
    receiver_main()
