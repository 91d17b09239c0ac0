"""What PostgreSQL can store of an observation: the check the shell makes before it stores a
report (`unstorable`) and the repair it tries first (`cleaned`). Re-exported by
tracker.adapters.base.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import timezone
from typing import Any, Callable

import orjson

from tracker.adapters.datatypes import MAX_CODE_LEN, MAX_REASON_LEN, Observation


def bad_text(value: Any) -> bool:
    """Text PostgreSQL refuses: not a str, a lone surrogate (not UTF-8), or a NUL."""
    if value is None:
        return False
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\x00" in value


def unstorable(o: Observation) -> str | None:
    """Why PostgreSQL would refuse this observation (NUL or lone surrogates in text, a time out
    of range, raw data that is not JSON), or None. A vendor's answer can be well-formed JSON
    and still hold such things; the shell checks before it stores, so that one bad report
    never sinks the batch it came in."""
    f = o.failure
    texts = (o.vendor_ref, o.issued_ref, o.recipient, o.code, o.text, o.operator) + ((f.code, f.reason) if f else ())
    if any(bad_text(t) for t in texts) or not o.vendor_ref:
        return "text with NUL or invalid characters"
    if any(c is not None and len(c) > MAX_CODE_LEN for c in (o.code, f.code if f else None)):
        return f"vendor code over {MAX_CODE_LEN} characters"
    if f and f.reason is not None and len(f.reason) > MAX_REASON_LEN:
        return f"failure reason over {MAX_REASON_LEN} characters"
    for at in (o.event_at, o.deadline):
        if at is not None:
            try:
                at.astimezone(timezone.utc)
            except (OverflowError, ValueError):
                return "time out of range"
    if o.raw is not None:
        try:
            encoded = orjson.dumps(o.raw, default=str)  # as the reducer stores it
        except TypeError:
            return "payload is not JSON data"
        if b"\\u0000" in encoded:
            return "payload holds NUL characters"
    return None


def _clean_text(value: Any, limit: int | None = None) -> Any:
    if not isinstance(value, str):
        return value
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")[:limit]


def _clean_data(value: Any) -> Any:
    """A payload's strings (keys too) cleaned as texts are; the rest as it is."""
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, list):
        return [_clean_data(v) for v in value]
    if isinstance(value, dict):
        return {_clean_text(k): _clean_data(v) for k, v in value.items()}
    return value


def cleaned(o: Observation) -> Observation:
    """`o` with what PostgreSQL cannot store in its texts and raw payload replaced: NUL by
    U+FFFD, a lone surrogate by '?', a code cut to MAX_CODE_LEN, a failure's reason to
    MAX_REASON_LEN. Its key (vendor_ref,
    recipient) and times are left as they are: if those cannot be stored, the report stays
    unstorable."""
    f = o.failure
    raw = o.raw
    if raw is not None:
        try:
            raw = orjson.loads(orjson.dumps(_clean_data(raw), default=str).replace(b"\\u0000", b"\\ufffd"))
        except (TypeError, orjson.JSONDecodeError):
            raw = _clean_text(str(raw))
    return replace(o, code=_clean_text(o.code, MAX_CODE_LEN), text=_clean_text(o.text), raw=raw,
                   operator=_clean_text(o.operator),
                   failure=replace(f, code=_clean_text(f.code, MAX_CODE_LEN),
                                   reason=_clean_text(f.reason, MAX_REASON_LEN)) if f else None)


def repaired(o: Observation, problem: Callable[[Observation], str | None] = unstorable
             ) -> tuple[Observation, str | None]:
    """`o` as PostgreSQL will take it, and what still keeps it from being stored (None:
    nothing), by `problem` (unstorable, or a caller's stricter check): checked once, and only
    what fails that is cleaned and checked again (the poller's answers, the postbacks)."""
    why = problem(o)
    if why is None:
        return o, None
    o = cleaned(o)
    return o, problem(o)
