"""The types every vendor adapter speaks (re-exported by tracker.adapters.base, where they
are imported from): the errors, the limits on what a message may carry, what a request and an
answer are, and the results a parser returns. Data only: no parsing here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from tracker.core.states import Failure, State


class ParseError(ValueError):
    """The payload cannot be read as this vendor's format. The message says why, never a secret."""


class NotConfigured(Exception):
    """The adapter cannot build a request: a setting it needs (a credential, a URL) is missing.
    The poller treats it as an account-level error (the circuit opens and alerts); it is not a
    ValueError, so that a ValueError from a bug is never mistaken for one."""


# Longest vendor id (`Observation.vendor_ref`, as issued and normalized), recipient (digits) and
# client reference a submission may carry: the intake refuses a row beyond them (PostgreSQL's
# btree entries hold about 2,700 bytes; no vendor's documented id comes near these). Adapters
# never truncate an id to fit (a cut id could name another message); a send response whose
# shared batch id is longer than MAX_REF_LEN is a ParseError, since it would be copied into
# every message of the row.
MAX_REF_LEN = 200
MAX_RECIPIENT_LEN = 32
MAX_CODE_LEN = 100  # a vendor's code is indexed (observations_unmapped): longer ones are cut
# A failure's reason goes into every event of the message (webhook bodies, NATS messages): a
# vendor's 60 KB of status details made 60 KB events, past a receiver's body limit. Cut to this.
MAX_REASON_LEN = 1000
MAX_CLIENT_REF_LEN = 500
# An integer id, code or number longer than this (about 300 digits) is none of them: it is never
# turned into text (slow for huge integers, and refused by Python beyond 4,300 digits).
MAX_INT_BITS = 1024

# `vendor_ref` of a message the vendor refused before giving it an id (a send rejected at once:
# Spark Sender `unsuccess`, a Skycore `Failure`, an engageSPARK per-message `error`, a Sparrow
# DATA_ERROR). The intake keys such a message by its submission, not by this empty ref.
NO_REF = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One report about one message, normalized (built with keywords only: ten fields are too
    many to tell apart by position).

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
    # The fragment of the payload this came from (JSON-able): this message's own part, never a
    # whole multi-message response again (its size must stay linear in the response's).
    raw: Any = None
    # The id exactly as the vendor wrote it (set by parse_send; None where no id was given):
    # what status calls must send back. `vendor_ref` is its normalized form, for matching.
    issued_ref: str | None = None
    # The mobile operator (carrier) the vendor says the message went to, where it says one
    # (Skycore's operator-name, else operator-id): kept on the message for delivery by route.
    operator: str | None = None
    # state None, yet the vendor says it is done with the message (Twilio's undelivered or
    # failed, engageSPARK's done, each with a code not in our table): its answer will not change,
    # so the message is not polled again before its tracking window ends (it was, for the whole
    # window: two days of calls a message at campaign scale).
    settled: bool = False
    # When the vendor sends the message, where it is scheduled for later (Twilio's SendAt, up to
    # 35 days ahead): its tracking window and its first poll start then, not at submission.
    scheduled_for: datetime | None = None
    # state None because the vendor does not know the id asked about (a lookup failure: an HTTP
    # 404, Spark Sender's 5 "Invalid Msg Id"), not because its code is unmapped: most often a
    # wrong vendor_ref from the sending application. Counted apart (tracker_poll_unknown_ids_total),
    # never as an unmapped code (which sent the operator to the developers for a mapping).
    unknown_id: bool = False


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
    data: Mapping[str, str] | None = None  # a form
    content: bytes | None = None  # a body as it is (the webhook sink's signed JSON)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An answer as the shell received it, handed back to the adapter to parse."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class MessageRef:
    """What the shell knows of a message it wants to poll. `vendor_ref` is the id as the vendor
    issued it (what a status call must send back); matching uses the normalized form."""

    vendor_ref: str
    recipient: str | None = None
    submitted_at: datetime | None = None
    deadline: datetime | None = None  # the vendor retries until then (stored at intake)


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
class LoginResult:
    """What a login answer said: a token and when it expires, or an account-level error, or a
    transient problem (the vendor is unavailable) with an optional Retry-After."""

    token: str | None = None
    expires_on: datetime | None = None
    account_error: AccountError | None = None
    retry_after_s: float | None = None
    transient_error: str | None = None


@dataclass(frozen=True, slots=True)
class PostbackRequest:
    """A postback as it reached us, for a vendor that signs its postbacks (SignsPostbacks): the
    URL as received (scheme, host, path with the token, query), every header, the raw body."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Setting:
    """A configuration key only one vendor has (`vendors.<vendor>.<key>`, a string), declared
    in its adapter's SETTINGS and found in `VendorConfig.settings`."""

    about: str
    secret: bool = False  # masked in logs and errors; may be given as `<key>_file`
    url: bool = False  # an http:// or https:// URL
    choices: tuple[str, ...] = ()  # the values allowed (case and surrounding slashes aside)


@dataclass(slots=True)
class SendResult:
    """What a raw send response (plus the request, where needed) says: one observation per
    message created (state `submitted`/`accepted`, or `rejected` with the vendor's code)."""

    observations: list[Observation] = field(default_factory=list)
    account_error: AccountError | None = None
    # what else the response said that the operator should read (the row's note): a value it
    # gave that cannot be read, and what stands in for it
    notes: list[str] = field(default_factory=list)
