"""Polling through a vendor's list endpoint (engageSPARK): when many messages are in flight,
one page of the list answers for up to a thousand of them.

The walk starts a minute before the oldest claimed message's submission (clock skew between the
vendor's accept time and ours) and follows the pages until every claimed message was seen, or
LIST_MAX_PAGES were read; the messages the pages did not show are left to the worker to ask
for one by one. A page shows messages other replicas hold too: their reports are ignored here.
A failed page ends the walk. An account error is every message's (they are handed back
unpolled); any other failure says nothing of the messages: those not seen yet are asked for one
by one, and the list endpoint rests for the vendor's `circuit_reset_s` (a list endpoint that
keeps failing once left them polled in name only, backed off, never asked).
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Sequence

import orjson

from tracker.adapters.base import (AccountError, HttpResponse, NotConfigured, Observation,
                                   ParseError, StatusResult)
from tracker.adapters.contract import ListsMessages
from tracker.config_types import VendorConfig
from tracker.db import DB_ERRORS, is_outage
from tracker.logging import get_logger, scrub
from tracker.poller.client import Deferred, VendorClient
from tracker.poller.health import VendorHealth
from tracker.poller.outcomes import (DB_AWAY_WAIT_S, MALFORMED, Claimed, Outcome, kind_of,
                                     observed, spread, storable, unpolled)
from tracker.poller.transport import TransportError

log = get_logger("tracker.poller")

LIST_CLAIM_MAX = 5000  # messages claimed at once in list mode
LIST_MAX_PAGES = 20  # ... and list pages walked for them before asking per message
LIST_SLACK = timedelta(seconds=60)  # vendor's accept time vs our submitted_at, clock skew


class ListWalker:
    def __init__(self, adapter: ListsMessages, cfg: VendorConfig, client: VendorClient,
                 health: VendorHealth):
        self.adapter = adapter
        self.cfg = cfg
        self.client = client
        self.health = health
        self.clock = client.clock
        self.resume_at = float("-inf")  # monotonic time the list endpoint may be used again

    def available(self) -> bool:
        """May a claim be polled through the list endpoint now (not resting after a failure)?"""
        return self.clock.monotonic() >= self.resume_at

    def rest(self, error: str | None) -> None:
        self.resume_at = self.clock.monotonic() + self.cfg.circuit_reset_s
        log.warning("list endpoint failed: messages asked for one by one for a while",
                    vendor=self.cfg.name, error=scrub(error or ""), for_s=self.cfg.circuit_reset_s)

    def as_status(self, o: Observation, by_ref: dict[str, Claimed], now: datetime) -> Observation:
        """A list entry of a claimed message read again as its status answer, with its ref: a
        failure without `done` is final once the deadline stored at intake (else 24 h from
        submission) has passed, as on a per-message poll (without the ref, never: the window
        ended it `unknown`). A list entry is the vendor's status object (engageSPARK)."""
        row = by_ref.get(o.vendor_ref)
        if row is None:
            return o  # another replica's message: ignored below
        try:
            answer = HttpResponse(200, {}, orjson.dumps(o.raw))
            [again] = self.adapter.parse_status([answer], [row.ref], now).observations
        except (ParseError, TypeError, ValueError):  # unreadable so: as the page read it
            return o
        return again

    async def walk(self, rows: Sequence[Claimed], send_by: float = math.inf
                   ) -> tuple[dict[int, Outcome], list[Claimed]]:
        """Outcomes of the messages the pages showed (or of all, on an error), and the rest; no
        page asked for after `send_by` (the claim's lease: see VendorClient.fetch)."""
        by_ref = {r.key[0]: r for r in rows}  # normalized ids, as the adapter reports them
        seen: dict[str, Observation] = {}

        def unseen() -> list[Claimed]:
            return [r for r in rows if r.key[0] not in seen]

        def handed_back(wait_s: float) -> tuple[dict[int, Outcome], list[Claimed]]:
            """No page asked now: what was seen, and the rest due again after `wait_s`."""
            self.health.release_probe()
            out = unpolled(unseen(), wait_s)
            out.update(observed([by_ref[ref] for ref in seen], seen))
            return out, []

        after = min(r.submitted_at for r in rows) - LIST_SLACK
        try:
            req = self.adapter.list_request(self.cfg, after=after, page=1,
                                            size=self.adapter.LIST_MAX_SIZE)
        except NotConfigured as e:  # a setting is missing: the operator must act
            self.health.record("account", f"account error config: {e}")
            return spread(rows, StatusResult(account_error=AccountError("config", str(e))),
                          lambda o: None, self.health.reopen_wait()), []
        pages = 0
        while req is not None and len(seen) < len(by_ref) and pages < LIST_MAX_PAGES:
            if self.health.is_open:
                break
            started = self.clock.monotonic()
            try:
                resp = await self.client.fetch(req, send_by=send_by)
                now = self.clock.now()
                result = self.adapter.parse_list(resp, now, req)
                # (a report PostgreSQL would refuse leaves its message to be asked on its own)
                result.observations = storable(self.as_status(o, by_ref, now)
                                               for o in result.observations)
            except Deferred as d:
                return handed_back(d.wait_s)
            except DB_ERRORS as e:  # the deployment's rate (shared_limits): its database away
                if not is_outage(e):
                    raise
                log.warning("list poll: shared rate limit unavailable (database); handed back"
                            " unpolled", vendor=self.cfg.name, error=type(e).__name__)
                return handed_back(DB_AWAY_WAIT_S)
            except TransportError as e:
                result = StatusResult(transient_error=str(e))
            except ParseError:
                result = StatusResult(transient_error=MALFORMED)
            self.health.took(self.clock.monotonic() - started)
            pages += 1
            kind, error = kind_of(result)
            self.health.record(kind, error)
            if kind == "account":
                out = spread(unseen(), result, lambda o: None, self.health.reopen_wait())
                out.update(observed([by_ref[ref] for ref in seen], seen))
                return out, []
            if kind != "ok":
                self.rest(error)
                break
            for o in result.observations:
                if o.vendor_ref in by_ref:
                    seen[o.vendor_ref] = o
            req = result.next_request
        return observed([by_ref[ref] for ref in seen], seen), unseen()
