"""The one event body every sink sends (docs/events.md, docs/event.schema.json). Pure.

    {"type": "message.<to_state>", "timestamp": <when the tracker recorded the change>,
     "data": {event_id, message_id, vendor, vendor_ref, recipient, client_ref, from_state,
              to_state, source, occurred_at, recorded_at, failure_code, failure_reason,
              failure_permanent, is_correction}}

Built from a row of `tracker.read_events`. Times are RFC 3339 in UTC with a `Z`. The bytes are
made once, when an event is taken from the outbox, and sent unchanged on every attempt and by
every sink, so a receiver that deduplicates by event id sees one body per id.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

import orjson

DATA_FIELDS = ("event_id", "message_id", "vendor", "vendor_ref", "recipient", "client_ref",
               "from_state", "to_state", "source", "occurred_at", "recorded_at", "failure_code",
               "failure_reason", "failure_permanent", "is_correction")

_JSON = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def event_type(to_state: str) -> str:
    return f"message.{to_state}"


def _text(value: Any) -> Any:
    """Enum values (states, sources) arrive from asyncpg as text already; anything else that is
    not JSON-native (a datetime stays: orjson writes it) is shown as text."""
    if value is None or isinstance(value, (str, int, bool, float, datetime)):
        return value
    return str(value)


def event_body(row: Mapping[str, Any]) -> dict[str, Any]:
    """The event for one transition (a read_events row, or any mapping with DATA_FIELDS)."""
    data = {k: _text(row[k]) for k in DATA_FIELDS}
    data["is_correction"] = bool(data["is_correction"])
    return {"type": event_type(data["to_state"]), "timestamp": data["recorded_at"], "data": data}


def encode(body: Mapping[str, Any]) -> bytes:
    return orjson.dumps(body, option=_JSON)


def encode_event(row: Mapping[str, Any]) -> bytes:
    return encode(event_body(row))
