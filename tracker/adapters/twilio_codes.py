"""Twilio's vocabulary, for tracker.adapters.twilio (which re-exports it): what each `status`
means, and what each `ErrorCode` says about a message that did not get through, from Twilio's
public documentation (docs/vendors.md#sources; the table there is this one).
"""
from __future__ import annotations

from tracker.core.states import State

# `status` -> (state, text). Where the message did not get through, ERROR_CODES refines it.
STATUSES: dict[str, tuple[State | None, str]] = {
    "accepted": (State.accepted, "received by the Messaging Service"),
    "scheduled": (State.accepted, "scheduled by the Messaging Service"),
    "queued": (State.accepted, "queued to be sent"),
    "sending": (State.accepted, "being dispatched to the carrier"),
    "sent": (State.sent, "accepted by the nearest upstream carrier"),
    "delivered": (State.delivered, "delivered"),
    "read": (State.read, "read by the recipient"),  # WhatsApp, RCS
    "undelivered": (State.failed, "the carrier reported it undelivered"),
    "failed": (State.failed, "could not be sent"),
    "canceled": (State.failed, "canceled before it was sent"),  # a scheduled message
    # Any part not delivered fails the message (the contract's rule for multipart).
    "partially_delivered": (State.failed, "partially delivered"),
    # Inbound statuses never describe a message we sent: recorded, never guessed.
    "receiving": (None, "inbound message being received"),
    "received": (None, "inbound message received"),
}
NOT_THROUGH = frozenset({"undelivered", "failed", "canceled", "partially_delivered"})
# ErrorCode -> (state, reason, permanent): what stopped a message. Another code of `undelivered`
# or `failed` is recorded unmapped (state None, its code and the vendor's words: counted and
# shown in tracker.vendor_health), never guessed from the coarse status, and not polled again
# (Observation.settled: Twilio's answer will not change); its window ends it `unknown`, saying
# the code. Without a code, the status is all there is (failed).
ERROR_CODES: dict[str, tuple[State, str, bool | None]] = {
    "30001": (State.failed, "queue overflow", False),
    "30002": (State.failed, "account suspended", None),
    "30003": (State.failed, "unreachable destination handset", False),
    "30004": (State.rejected, "message blocked", True),
    "30005": (State.rejected, "unknown destination handset", True),
    "30006": (State.rejected, "landline or unreachable carrier", True),
    "30007": (State.rejected, "message filtered (carrier violation)", None),
    "30008": (State.failed, "unknown error", None),
    "30009": (State.failed, "missing segment", False),
    "30010": (State.rejected, "message price exceeds max price", False),
    "30032": (State.rejected, "toll-free number not verified", None),
    "30034": (State.rejected, "message from an unregistered number (A2P 10DLC)", None),
    "30017": (State.failed, "carrier network congestion", False),
    "30018": (State.rejected, "destination carrier requires sender ID pre-registration", None),
    "30019": (State.rejected, "content size exceeds carrier limit", True),
    # US A2P 10DLC limits: the carrier refused traffic over the campaign's rate or daily cap
    "30022": (State.failed, "A2P 10DLC rate limit exceeded", False),
    "30023": (State.failed, "A2P 10DLC daily message cap reached", False),
    "30024": (State.rejected, "numeric sender ID not provisioned on carrier", None),
    "30027": (State.failed, "A2P 10DLC T-Mobile daily message limit reached", False),
    "30036": (State.expired, "validity period expired", False),  # never sent: queued too long
    "21211": (State.rejected, "invalid 'To' number", True),
    "21408": (State.rejected, "sending to this region is not enabled", None),
    "21610": (State.rejected, "the recipient unsubscribed", True),
    "21614": (State.rejected, "'To' is not a valid mobile number", True),
    "21635": (State.rejected, "'To' is a landline", True),
}
# Error codes of the API that are about our account or its settings, never a message.
ACCOUNT_CODES = {
    "20003": "authentication failed",
    "20005": "account not active",
    "20008": "not accessible with test credentials",
    "21606": "the From number cannot send SMS",
    "21608": "trial accounts send only to verified numbers",
}
# Error codes of a send call that failed as a call. Twilio's error pages: a 429 "is never processed
# and is always safe to retry" (refused, not permanent); after a 500 "it is possible for a customer
# to receive multiple messages" if retried, so whether it was sent is unknown (as after a 503).
CALL_REFUSED_CODES = {"20429": "too many requests"}
UNSETTLED_CODES = frozenset({"20500", "20503"})
