"""Spark Sender's vocabulary, for tracker.adapters.sparksender (which re-exports it): what each
`sms_status` of a status call means, and what each `status_code` of a send says, from the
vendor's API page and public notes (docs/vendors.md#sources; its Spark Sender tables are these).
"""
from __future__ import annotations

from tracker.core.states import State

# sms_status -> (state, vendor text, permanent). 5 is a lookup failure, not an outcome: state None.
STATUS_CODES: dict[str, tuple[State | None, str, bool | None]] = {
    "0": (State.accepted, "Pending", None),
    "1": (State.sent, "Send", None),
    "2": (State.delivered, "Delivered", None),
    "3": (State.failed, "Fail", None),
    "4": (State.accepted, "Processing", None),
    "5": (None, "Invalid Msg Id", None),
}
UNKNOWN_ID_CODE = "5"  # the lookup failure: the platform does not know the msg_id asked about
# sms_status values that are about the account, never a message.
STATUS_ACCOUNT_CODES = {
    "6": "Api key is invalid",
    "7": "Api status is inactive",
    "8": "Client is Suspended",
}

SEND_OK = "204"
# Send `status_code` (single send) / `status` (bulk `unsuccess`) that reject one message.
SEND_REJECT_CODES: dict[str, tuple[str, bool | None]] = {
    "203": ("Contact Number is Invalid or Operator not Support", True),
    "205": ("Length of Contact is Invalid", True),
    "206": ("Country is not Available for Sending SMS", True),
    "207": ("No Contact Numbers", True),
    "209": ("Sending the Message is Unsuccessful", None),
    "212": ("Rate Card is not Set for the Country", True),
    "213": ("Route is not Set for the Country", True),
    "216": ("Message contains a blocked word", True),
}
# Send codes about the account: AccountError, never a message state.
SEND_ACCOUNT_CODES = {
    "201": "Client API Status is Inactive",
    "202": "Invalid API Key",
    "208": "Account Balance is Insufficient",
    "210": "Client is Suspended",
    "211": "No Mask ID / Mask Id is not Approved",
    "214": "API under maintenance",
    "215": "Scheduled maintenance",
}
