"""engageSPARK's status object and its pushes, for tracker.sandbox.engagespark: what a poll, a
list page and a `clientPushURL` push carry for a message in a given vendor-side state.

- `accepted`: not yet with the telco (`deliveredToTelco` false), `done` false.
- `sent`: with the telco, no receipt (`deliveredToPhone` "unknown"); a carrier that never sends a
  receipt leaves it there, `done` true (nothing left to retry).
- `retrying` (knob `temp_failure`): a hand-off to the telco failed and the vendor retries it
  (NOTES: it "retries failed hand-offs"; `error` is the hand-off problem, "read it when
  deliveredToTelco is false"): `deliveredToTelco` false, `error` set, `deliveryError` empty,
  `done` false. Its final outcome follows.
- `telco_retrying` (knob `telco_retry`): the telco's receipt said a temporary failure ("contact
  absent - temporary") and the vendor tries again, until `deliveryDeadline` (NOTES: "a failure
  before that deadline is not final"): `deliveredToTelco` true, `deliveredToPhone` failed,
  `deliveryError` set, `done` false. A receipt: pushed. Its final outcome follows.
- an outcome (`delivered`, `failed`, `expired`, `rejected`): the telco's delivery receipt,
  `deliveredToPhone` confirmed / failed with `deliveryError` the telco's reason, `done` true.

Pushes: NOTES, "whenever we receive a delivery receipt we POST to this URL": one push per receipt,
so the outcome and a telco's temporary failure are pushed (a message without a receipt gets none;
a hand-off retry is no receipt). The ground truth (tracker.sandbox.truth) is unchanged: the last real state is the
outcome, or `sent` without a receipt, and a retry is reported there as `sent`, the most the
tracker has heard by then.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from tracker.sandbox.common import Push, dumps
from tracker.sandbox.knobs import Knobs
from tracker.sandbox.truth import Message

PRICE_MICRO = 20000
PHONE = {"delivered": "confirmed", "failed": "failed", "expired": "failed", "rejected": "failed",
         "telco_retrying": "failed"}
RECEIPTS = frozenset(PHONE)  # the states a delivery receipt tells: the only ones pushed
HANDOFF_ERROR = "network error"  # `error` while a failed hand-off is retried
TELCO_TEMPORARY = "contact absent - temporary"  # `deliveryError` of a receipt the vendor retries after
NOT_DONE = ("accepted", "retrying", "telco_retrying")  # the vendor still has work to do (done false)


def es_time(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def status_object(msg: Message, state: str, knobs: Knobs) -> dict[str, Any]:
    d = msg.data
    telco = state not in ("accepted", "retrying")  # with the telco
    phone = PHONE.get(state, "unknown")
    delivered_t = msg.time_of("delivered")
    delivered = state == "delivered"
    obj: dict[str, Any] = {
        "id": msg.ref, "direction": "egress", "created": es_time(msg.wall0),
        "sender": d["sender"], "recipient": msg.recipient, "contactId": d["contact_id"],
        "engagementId": 0, "engagementFlowId": 0, "engagementRunId": 0, "engagementPartId": "",
        "pricePerPart": PRICE_MICRO,
        "successPartCount": d["parts"] if delivered else 0,
        "successT": es_time(msg.wall(delivered_t)) if delivered and delivered_t else None,
        "message": d["text"],
    }
    if knobs.old_field_names:
        obj["deliveredToVendor"] = telco
        obj["deliveredByVendor"] = phone == "confirmed"
    else:
        obj["deliveredToTelco"] = telco
        obj["deliveredToPhone"] = phone
    obj.update({
        "done": state not in NOT_DONE,
        "error": HANDOFF_ERROR if state == "retrying" else "",
        "deliveryError": (msg.code if state in ("failed", "expired", "rejected")
                          else TELCO_TEMPORARY if state == "telco_retrying" else ""),
        "chargedMicro": d["parts"] * PRICE_MICRO if telco else 0,
        "client_ref": d["client_ref"], "firstName": "", "lastName": "", "fullPhoneNumber": "",
    })
    return obj


def receipt_pushes(msg: Message, knobs: Knobs) -> list[Push]:
    """One push per delivery receipt, to the message's clientPushURL (none without one)."""
    url = msg.data.get("push_url")
    if not url:
        return []
    return [Push(due=t, body=dumps(status_object(msg, state, knobs)), content_type="application/json",
                 ref=msg.ref, recipient=None, kind=state, url=url)
            for t, state in msg.timeline if state in RECEIPTS]
