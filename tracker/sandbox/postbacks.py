"""Sends a vendor's postbacks the way the vendor does: in due order, `postback_concurrency` at a
time with `postback_interval_s` between two, retrying a postback not answered 200 (2xx for
vendors other than Skycore) within the timeout `postback_retry_s` later, up to
`postback_retries` times. Only loopback URLs are ever called.

Each attempt is logged (`Sandbox.postbacks`) with `digest`, the SHA-256 (hex) of the body bytes
actually sent (garbled or not), so that a receiver's stored copy can be matched to the attempt
it answered (a duplicate has its original's digest); `to`, the receiver's host:port (never the
path: it carries the receiver's token), and `t_end`, when the answer (or the error) came, so
that an attempt can be placed against a receiver's outage.
"""
from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from tracker.sandbox.common import Push, is_loopback_url
from tracker.sandbox.truth import iso, utcnow

if TYPE_CHECKING:
    from tracker.sandbox.server import Sandbox

MIN_TIMEOUT_S = 0.25  # real seconds: a scaled 10 s timeout never gets shorter than this


class Dispatcher:
    def __init__(self, sandbox: "Sandbox", vendor: str) -> None:
        self.sandbox = sandbox
        self.vendor = vendor
        self._heap: list[tuple[float, int, Push]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._sending = 0

    @property
    def pending(self) -> int:
        """Pushes still to go out: scheduled, or on their way (sent, not answered yet)."""
        return len(self._heap) + self._sending

    def schedule(self, push: Push) -> None:
        if self._closed:
            return
        heapq.heappush(self._heap, (push.due, next(self._seq), push))
        self._wake.set()
        knobs = self.sandbox.get_knobs(self.vendor)
        want = int(knobs.postback(self.vendor, "postback_concurrency"))
        self._workers = [w for w in self._workers if not w.done()]
        while len(self._workers) < want:
            self._workers.append(asyncio.get_running_loop().create_task(
                self._work(), name=f"sandbox-postbacks-{self.vendor}"))

    async def stop(self) -> None:
        self._closed = True
        self._heap.clear()
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._heap[0][0] - loop.time()
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                continue
            _, _, push = heapq.heappop(self._heap)
            self._sending += 1
            try:
                await self._deliver(push)
            finally:
                self._sending -= 1
            knobs = self.sandbox.get_knobs(self.vendor)
            pause = knobs.scaled(knobs.postback(self.vendor, "postback_interval_s"))
            if pause > 0:
                await asyncio.sleep(pause)

    async def _deliver(self, push: Push) -> None:
        knobs = self.sandbox.get_knobs(self.vendor)
        url = push.url or self.sandbox.postback_urls.get(self.vendor)
        url = url and self.sandbox.via_proxy(url)
        entry: dict[str, Any] = {
            "t": asyncio.get_running_loop().time(), "wall": iso(utcnow()), "vendor": self.vendor,
            "kind": push.kind, "ref": push.ref, "recipient": push.recipient,
            "attempt": push.attempt, "duplicate": push.duplicate,
            "malformed": push.malformed and push.attempt == 0, "status": None, "error": None,
        }
        if not url or not is_loopback_url(url):
            entry["error"] = "no postback url" if not url else "not a loopback url"
            self.sandbox.log_postback(entry)
            return
        body = push.body
        if entry["malformed"]:
            body = body[: max(1, len(body) // 2)]
        entry["digest"] = hashlib.sha256(body).hexdigest()
        entry["to"] = f"{URL(url).host}:{URL(url).port}"
        timeout = max(knobs.scaled(knobs.postback_timeout_s), MIN_TIMEOUT_S)
        ok = False
        try:
            async with self.sandbox.http.post(
                url, data=body, headers={"Content-Type": push.content_type, **(push.headers or {})},
                timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False,
            ) as resp:
                await resp.read()
                entry["status"] = resp.status
                ok = resp.status == 200 if self.vendor == "skycore" else 200 <= resp.status < 300
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            entry["error"] = type(exc).__name__
        entry["t_end"] = asyncio.get_running_loop().time()
        self.sandbox.log_postback(entry)
        retries = int(knobs.postback(self.vendor, "postback_retries"))
        if not ok and push.attempt < retries and not self._closed:
            push.attempt += 1
            push.due = asyncio.get_running_loop().time() + knobs.scaled(
                knobs.postback(self.vendor, "postback_retry_s"))
            self.schedule(push)
