"""Hostile submission rows for the fuzz scenario, generated fast from a seed, each meant to be
refused with a reason. A row that the intake's pure reader would take
(tracker.intake.rows.read_row) is dropped and another generated: the suite checks that the
running intake refuses what must be refused, whatever gets past its reader."""
from __future__ import annotations

import random
import string
import uuid
from datetime import datetime, timezone
from typing import Any

import orjson

from _chaos.fuzz_gen import CJK
from tracker.intake.rows import RowError, read_row


def row(rng: random.Random, max_messages: int) -> dict[str, Any]:
    """One submission row meant to be refused (columns as tracker.submissions has them;
    submitted_at as text, cast by PostgreSQL)."""
    vendor = rng.choice(["sparksender", "engagespark", "skycore", "sparrow"])
    r: dict[str, Any] = {"vendor": vendor, "vendor_ref": None, "recipient": None,
                         "client_ref": None, "submitted_at": None, "response": None,
                         "request": None}
    k = rng.randrange(9)
    if k == 0:
        r["vendor"] = rng.choice(["", "SPARKSENDER", "spark sender", " skycore", "nosuch",
                                  "".join(rng.choices(string.ascii_lowercase, k=12))])
        r["vendor_ref"] = "12345"
    elif k == 1:
        r["client_ref"] = "neither"
    elif k == 2:
        r["vendor_ref"] = rng.choice(["", "   ", "x" * rng.randrange(201, 3000),
                                      CJK * rng.randrange(40, 400)])
    elif k == 3:
        r.update(vendor_ref="4242", client_ref="c" * rng.randrange(501, 5000))
    elif k == 4:
        r.update(vendor_ref="4242", recipient="9" * rng.randrange(33, 200))
    elif k == 5:
        r.update(vendor_ref="4242", submitted_at=rng.choice(
            ["1999-12-31 23:59:59+00", "2200-01-01 00:00:00+00", "infinity", "-infinity",
             "4713-01-01 00:00:00+00 BC", "9999-12-31 23:59:59+00"]))
    elif k == 6:
        r["response"] = rng.choice([1, "x", None, True, [], [1], {}, {"success": "x"},
                                    {"messages": [{"id": 5}]}, {"status": "Success"},
                                    {"data": {"batch_id": 7}, "result": "00"}, {"a": [[[]]]}])
        r["response"] = r["response"] if r["response"] is not None else {"x": None}
    elif k == 7:
        r.update(vendor="sparrow", vendor_ref=str(uuid.UUID(int=rng.getrandbits(128))))
    else:
        n = max_messages + rng.randrange(1, 50)
        r.update(vendor="sparksender", response={"success": [[
            {"number": f"63917{i:07d}", "msgId": str(900000 + i)} for i in range(n)]],
            "unsuccess": [[]]})
    return r


def refused(r: dict[str, Any], max_messages: int) -> bool:
    """Would the intake's pure reader refuse it? (A time out of range arrives as NULL.)"""
    dump = lambda v: None if v is None else orjson.dumps(v).decode()  # noqa: E731
    claimed = {**r, "id": 1, "submitted_at": None if r["submitted_at"] else datetime.now(timezone.utc),
               "submitted_text": r["submitted_at"], "response": dump(r["response"]),
               "request": dump(r["request"]), "response_too_large": None,
               "response_limit": 16 << 20}
    try:
        read_row(claimed, datetime.now(timezone.utc), max_messages)
        return False
    except RowError:
        return True
