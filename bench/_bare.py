"""The limit for the postback route: a bare aiohttp handler in its own process, on the same event
loop implementation as the daemon (tracker.loop), that reads the body and parses it as the
tracker must (orjson, then the Skycore v2 shape: tracking id, code, status, time), and answers
200 with the same JSON. Nothing is stored. Prints its URL's base on stdout when listening.

    .venv/bin/python bench/_bare.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from aiohttp import web  # noqa: E402

from tracker import loop  # noqa: E402

OK = orjson.dumps({"status": "ok"})


async def handler(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        fields = orjson.loads(body)
        ref = fields["tracking-id"].strip()
        code = str(fields["code"]).strip().upper()
        status = " ".join(str(fields.get("status", "")).split())
        when = fields.get("timestamp")
        if not (ref and code and isinstance(when, str)):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        return web.Response(status=400, body=b'{"error":"unreadable"}', content_type="application/json")
    return web.Response(body=OK, content_type="application/json")


async def main() -> None:
    app = web.Application()
    app.router.add_route("POST", "/postbacks/{vendor}/{token}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = site._server.sockets[0].getsockname()[:2]
    print(f"http://{host}:{port}", flush=True)
    import asyncio
    await asyncio.Event().wait()


if __name__ == "__main__":
    loop.run(main())
