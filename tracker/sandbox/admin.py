"""The sandbox's control endpoints, under `/_sandbox`:

- `GET|POST /_sandbox/knobs`   current knobs per vendor / change them (see `Sandbox.configure`)
- `GET /_sandbox/truth`        the ground truth, one object per message
- `GET /_sandbox/requests`     every vendor request received (`?since=N` to skip the first N),
                               with its answer's status, `retry_after` (its Retry-After, if any)
                               and `garbled` (how the malformed knob garbled it, if it did)
- `GET /_sandbox/postbacks`    every postback attempt made (`?since=N`), and `pending`: how many
                               are still to go out (scheduled, retries included, or on their way)
- `POST /_sandbox/postback_url` `{"vendor": ..., "url": ...}` the account-wide postback URL
"""
from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from tracker.adapters import VENDORS
from tracker.sandbox.common import json_response

if TYPE_CHECKING:
    from tracker.sandbox.server import Sandbox


def add_admin_routes(app: web.Application, sandbox: "Sandbox") -> None:
    admin = _Admin(sandbox)
    routes = [
        ("GET", "/_sandbox/knobs", admin.knobs),
        ("POST", "/_sandbox/knobs", admin.knobs),
        ("GET", "/_sandbox/truth", admin.truth),
        ("GET", "/_sandbox/requests", admin.requests),
        ("GET", "/_sandbox/postbacks", admin.postbacks),
        ("POST", "/_sandbox/postback_url", admin.postback_url),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)


class _Admin:
    def __init__(self, sandbox: "Sandbox") -> None:
        self.sandbox = sandbox

    async def knobs(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                spec = orjson.loads(await request.read())
                self.sandbox.configure(spec)
            except (orjson.JSONDecodeError, ValueError) as exc:
                return json_response({"error": str(exc)}, status=400)
        return json_response({"vendors": {v: self.sandbox.get_knobs(v).as_dict() for v in VENDORS}})

    async def truth(self, request: web.Request) -> web.Response:
        rows = [{"vendor": k[0], "vendor_ref": k[1], "recipient": k[2], **v}
                for k, v in self.sandbox.truth().items()]
        return json_response({"truth": rows})

    async def requests(self, request: web.Request) -> web.Response:
        sb = self.sandbox
        return json_response({"total": sb.request_count,
                              "requests": _since(request, sb.requests, sb.request_count)})

    async def postbacks(self, request: web.Request) -> web.Response:
        sb = self.sandbox
        return json_response({"total": sb.postback_count, "pending": sb.pending_postbacks(),
                              "postbacks": _since(request, sb.postbacks, sb.postback_count)})

    async def postback_url(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            self.sandbox.set_postback_url(str(body["vendor"]), body.get("url"))
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return json_response({"error": f"bad request: {exc}"}, status=400)
        return json_response({"ok": True})


def _since(request: web.Request, log: collections.deque[dict[str, Any]], total: int
           ) -> list[dict[str, Any]]:
    try:
        since = max(0, int(request.query.get("since", "0")))
    except ValueError:
        since = 0
    first = total - len(log)  # entries dropped off the front
    return list(log)[max(0, since - first):]
