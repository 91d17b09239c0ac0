"""What a NATS sink publishes (tracker.sinks.jetstream): each event's subject and headers, the
size the broker counts against its max_payload, whether a stream takes every subject the sink
can publish (its vendors' events: every state but `submitted`); and which of the broker's refusals are for good. Pure.

The size: nats-py checks only the body against the server's max_payload, but the server counts
headers too; a message over it is refused with `-ERR 'Maximum Payload Violation'` and the
connection is closed, so its publish only times out, again on every try. Measured here first,
such an event is refused before it is sent (dead-lettered, as one over max_msg_size is).
"""
from __future__ import annotations

from typing import Iterable

import nats.errors
import nats.js.errors
from nats.js.api import Header

from tracker.adapters import VENDORS
from tracker.core.states import State
from tracker.logging import scrub

# nats-py's header block: "NATS/1.0\r\n", "<key>: <value>\r\n" per header, then "\r\n"
HEADER_LINE = len(b"NATS/1.0\r\n")
LINE_END = len(b"\r\n")
# The states an event can go to: every one but `submitted`, where each message starts
# (tracker.transitions: CHECK (to_state > from_state)); a stream need not take that subject.
EVENT_STATES = tuple(s for s in State if s > State.submitted)
# JetStream's error codes for a message it will never take, however often it is sent again
NEVER_PUBLISHABLE = {10054: "larger than the stream's max_msg_size"}


class TooLarge(nats.errors.MaxPayloadError):
    """Body and headers over the server's max_payload: the server would close the connection."""

    def __init__(self, size: int, limit: int):
        super().__init__()
        self.size, self.limit = size, limit

    def __str__(self) -> str:
        return f"{self.size} bytes with its headers, over the server's max_payload of {self.limit}"


def subject(prefix: str, vendor: str, to_state: str) -> str:
    return f"{prefix}.{vendor}.{to_state}"


def headers(event_id: int, stream: str) -> dict[str, str]:
    """Deduplicated by event id; refused by any stream but ours (Nats-Expected-Stream)."""
    return {Header.MSG_ID.value: str(event_id), Header.EXPECTED_STREAM.value: stream}


def size(body: bytes, hdrs: dict[str, str]) -> int:
    """The bytes the server counts against max_payload: the header block and the body."""
    block = HEADER_LINE + sum(len(f"{k}: {v}".encode()) + LINE_END for k, v in hdrs.items()) + LINE_END
    return block + len(body)


def check_size(body: bytes, hdrs: dict[str, str], max_payload: int) -> None:
    n = size(body, hdrs)
    if n > max_payload:
        raise TooLarge(n, max_payload)


def matches(pattern: str, subj: str) -> bool:
    """Whether a NATS subject filter ('*' one token, '>' one or more) takes a concrete subject."""
    want, got = pattern.split("."), subj.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


def published_subjects(prefix: str, vendors: Iterable[str] = VENDORS) -> list[str]:
    """Every subject the sink can publish to: one per vendor given and state an event can go to."""
    return [subject(prefix, v, s.name) for v in vendors for s in EVENT_STATES]


def not_taken(prefix: str, stream_subjects: Iterable[str], vendors: Iterable[str] = VENDORS) -> list[str]:
    """The subjects of `vendors`' events that none of the stream's subject filters takes."""
    filters = list(stream_subjects or ())
    return [s for s in published_subjects(prefix, vendors) if not any(matches(f, s) for f in filters)]


# --- what the broker refuses -------------------------------------------------------------------


def never_publishable(e: BaseException) -> bool:
    """The broker refuses this message itself (not the connection, not the stream): sent again,
    it would be refused again. Dead-lettered, so that it holds up nothing behind it."""
    return isinstance(e, nats.errors.MaxPayloadError) or (
        isinstance(e, nats.js.errors.APIError) and e.err_code in NEVER_PUBLISHABLE)


def refusal(e: BaseException) -> str:
    """The broker's refusal, redacted, as a dead letter's last_error shows it."""
    why = NEVER_PUBLISHABLE.get(getattr(e, "err_code", None), "")
    return scrub(f"{type(e).__name__}: {e}" + (f" ({why})" if why else ""))[:300]


def closed_why(nc) -> str:
    """Why the broker closed the connection, as it said (e.g. a maximum payload violation)."""
    return f" (the broker closed the connection: {nc.last_error})" if nc.is_closed and nc.last_error else ""
