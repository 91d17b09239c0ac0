"""The types every vendor adapter speaks. Adapters are sans-I/O: they build requests and parse
answers; the shell (poller, postback server, intake) does the I/O and the database work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from tracker.core.states import Failure, State


class ParseError(ValueError):
    """The payload cannot be read as this vendor's format. The message says why, never a secret."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One report about one message, normalized.

    `state` is None when the vendor's code is not in our mapping table: the report is recorded
    and counted as unmapped, never guessed.
    """

    vendor: str
    vendor_ref: str  # normalized with the adapter's normalize_ref
    recipient: str | None  # normalized digits; part of the key for Sparrow (batch id + recipient)
    state: State | None
    code: str  # the vendor's own code or status value, as text
    text: str | None = None  # the vendor's own words for it
    event_at: datetime | None = None  # the vendor's time of the event, when it gives one
    failure: Failure | None = None
    deadline: datetime | None = None  # vendor keeps retrying until then (engageSPARK)
    raw: Any = None  # the fragment of the payload this came from (JSON-able)


@dataclass(frozen=True, slots=True)
class AccountError:
    """A problem with our account or the vendor, not with a message: bad key, suspended, no
    funds, maintenance. Opens the vendor's circuit; never changes a message's state."""

    code: str
    reason: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request for the shell to send. It carries credentials: never log it whole."""

    method: str
    url: str
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    json: Any = None
    data: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class MessageRef:
    """What the shell knows of a message it wants to poll."""

    vendor_ref: str
    recipient: str | None = None


@dataclass(slots=True)
class StatusResult:
    """What one status answer said: observations, and/or an account-level error, and/or a
    transient problem (5xx, 429) with an optional Retry-After."""

    observations: list[Observation] = field(default_factory=list)
    account_error: AccountError | None = None
    retry_after_s: float | None = None
    transient_error: str | None = None
    # For list-style endpoints: the request for the next page, if any.
    next_request: HttpRequest | None = None


@dataclass(slots=True)
class SendResult:
    """What a raw send response (plus the request, where needed) says: one observation per
    message created (state `submitted`/`accepted`, or `rejected` with the vendor's code)."""

    observations: list[Observation] = field(default_factory=list)
    account_error: AccountError | None = None


def digits(number: Any) -> str:
    """A phone number as digits only: '+1 (555) 010-2030' -> '15550102030'."""
    return "".join(ch for ch in str(number) if ch.isdigit())


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An answer as the shell received it, handed back to the adapter to parse."""

    status: int
    headers: Mapping[str, str]
    body: bytes
