"""Operations endpoints: /healthz (alive), /readyz (database reachable, migrations current),
/metrics (Prometheus text)."""
from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tracker.db.migrate import pending
from tracker.metrics import REGISTRY


def add_routes(app: web.Application, tracker) -> None:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(2):
                async with tracker.pool.acquire() as conn:
                    todo = await pending(conn)
        except Exception as e:  # any failure to reach the database means not ready
            return web.json_response({"status": "unavailable", "reason": type(e).__name__},
                                     status=503)
        if todo:
            return web.json_response(
                {"status": "migrations pending", "pending": [m.version for m in todo]}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
