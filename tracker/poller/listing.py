"""Polling through a vendor's list endpoint (engageSPARK): when many messages are in flight,
one page of the list answers for up to a thousand of them.

The walk starts a minute before the oldest claimed message's submission (clock skew between the
vendor's accept time and ours) and follows the pages until every claimed message was seen, or
LIST_MAX_PAGES were read; the messages the pages did not show are left to the worker to ask
for one by one. A page shows messages other replicas hold too: their reports are ignored here.
A failed page ends the walk: the messages not seen yet share its outcome.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Sequence

from tracker.adapters.base import AccountError, NotConfigured, Observation, ParseError, StatusResult
from tracker.adapters.contract import ListsMessages
from tracker.config_types import VendorConfig
from tracker.poller.client import Deferred, VendorClient
from tracker.poller.health import VendorHealth
from tracker.poller.outcomes import (MALFORMED, Claimed, Outcome, kind_of, observed, spread,
                                     storable, unpolled)
from tracker.poller.transport import TransportError

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

    async def walk(self, rows: Sequence[Claimed]) -> tuple[dict[int, Outcome], list[Claimed]]:
        """Outcomes of the messages the pages showed (or of all, on an error), and the rest."""
        by_ref = {r.key[0]: r for r in rows}  # normalized ids, as the adapter reports them
        seen: dict[str, Observation] = {}

        def unseen() -> list[Claimed]:
            return [r for r in rows if r.key[0] not in seen]

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
                result = self.adapter.parse_list(await self.client.fetch(req), self.clock.now(), req)
                # (a report PostgreSQL would refuse leaves its message to be asked on its own)
                result.observations = storable(result.observations)
            except Deferred as d:
                self.health.release_probe()
                out = unpolled(unseen(), d.wait_s)
                out.update(observed([by_ref[ref] for ref in seen], seen))
                return out, []
            except TransportError as e:
                result = StatusResult(transient_error=str(e))
            except ParseError:
                result = StatusResult(transient_error=MALFORMED)
            self.health.took(self.clock.monotonic() - started)
            pages += 1
            kind, error = kind_of(result)
            self.health.record(kind, error)
            if kind != "ok":
                out = spread(unseen(), result, lambda o: None, self.health.reopen_wait())
                out.update(observed([by_ref[ref] for ref in seen], seen))
                return out, []
            for o in result.observations:
                if o.vendor_ref in by_ref:
                    seen[o.vendor_ref] = o
            req = result.next_request
        return observed([by_ref[ref] for ref in seen], seen), unseen()
