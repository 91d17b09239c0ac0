"""A webhook sink's read batch: events taken from the outbox, sent straight away, and settled
together (tracker.sinks.store.settle): what was delivered needs no row; everything else goes
into tracker.sink_deliveries in the transaction that moves the cursor past the batch. Pure
bookkeeping, no I/O.

An event is sent straight from the batch only when it is its message's one event in the batch,
its message has nothing pending for the sink, and no earlier batch still open holds an event of
its message; otherwise it goes to the table unsent, behind its message's earlier events (the
table keeps one message's events in order, and batches are settled in the order they were read).
"""
from __future__ import annotations

from typing import AbstractSet as Set
from typing import Iterable, Sequence

from tracker.sinks.policy import EventFilter, Outcome
from tracker.sinks.store import Claimed, Result, Unsettled, from_outbox


class ReadBatch:
    def __init__(self, last_event_id: int, last_pos: int, started: float, direct: Sequence[Claimed],
                 to_table: Sequence[Claimed]):
        self.last_event_id = last_event_id  # the cursor moves past it when settled
        self.last_pos = last_pos  # the next batch is read after it
        self.started = started
        self.to_table = list(to_table)
        self.messages = {c.message_id for c in direct} | {c.message_id for c in to_table}
        self.open = {c.event_id: c for c in direct}  # sent or to send, no answer yet
        self.failed: list[tuple[Claimed, Result]] = []
        self.delivered = 0

    @classmethod
    def of(cls, rows: Sequence, keep: EventFilter, started: float,
           busy: Set[int] = frozenset()) -> "ReadBatch":
        """From read_events rows (in position order, each with `message_pending`: its message
        has an event pending in the table): the filter's events, split into those sent
        straight away and those queued in the table. `busy`: messages of earlier batches
        still open."""
        kept = [r for r in rows if keep.matches(r["vendor"], r["to_state"])]
        per_message: dict[int, int] = {}
        for r in kept:
            per_message[r["message_id"]] = per_message.get(r["message_id"], 0) + 1
        direct, to_table = [], []
        for r in kept:
            alone = (per_message[r["message_id"]] == 1 and not r["message_pending"]
                     and r["message_id"] not in busy)
            (direct if alone else to_table).append(from_outbox(r))
        return cls(rows[-1]["event_id"], rows[-1]["pos"], started, direct, to_table)

    def came_back(self, r: Result) -> bool:
        """Take the answer for one of our events; False when it is not ours (a table row's)."""
        c = self.open.pop(r.event_id, None)
        if c is None:
            return False
        if r.outcome is Outcome.delivered:
            self.delivered += 1
        else:
            self.failed.append((c, r))
        return True

    @property
    def done(self) -> bool:
        return not self.open

    def settlement(self, in_flight: Iterable[int]) -> tuple[list[Unsettled], set[int]]:
        """What goes into the table, and the events handed over to it while still being sent
        (their answers are then recorded as any claimed row's). Every event not delivered is
        in the list exactly once."""
        flying = set(in_flight) & set(self.open)
        rows = [Unsettled(c) for c in self.to_table]
        for c, r in self.failed:
            if r.outcome in (Outcome.gone, Outcome.released):  # not attempted, or not its fault
                rows.append(Unsettled(c))
            else:
                rows.append(Unsettled(c, attempts=1, retry_in_s=r.retry_in_s,
                                      dead=r.outcome is Outcome.dead, last_status=r.status,
                                      last_error=r.error))
        rows += [Unsettled(c, in_flight=c.event_id in flying) for c in self.open.values()]
        return rows, flying
