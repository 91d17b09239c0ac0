"""The reducer's metrics: observations stored (and vendor codes not in the mapping, and vendor
times no report can mean) and transitions made, counted once per label set and batch, not per
row (tracker.db.reducer)."""
from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Iterable, Mapping, Sequence

from tracker import metrics
from tracker.core.reduce import PlannedTransition, plausible
from tracker.logging import get_logger
from tracker.masking import mask_secrets
from tracker.throttle import Throttle

log = get_logger("tracker.reducer")


def count_observations(source: str, rows: Iterable[tuple[str, object, str | None, bool]]) -> int:
    """Metrics for stored observations, (vendor, state, code, unknown id) each: one increment
    per label set and batch, not per row. Unmapped codes are counted per vendor (a code is never
    a label: any vendor can send any number of them) and logged, at most once a minute per
    vendor; the codes themselves are in tracker.vendor_health. A lookup failure (the vendor does
    not know the id: Observation.unknown_id) is counted and logged apart, not as unmapped.
    Returns how many were unmapped."""
    stored: Counter[str] = Counter()
    unmapped: dict[str, Counter[str]] = {}
    unknown: Counter[str] = Counter()
    for vendor, state, code, unknown_id in rows:
        stored[vendor] += 1
        if unknown_id:
            unknown[vendor] += 1
        elif state is None:
            # masked, then cut: what is left of a code around a secret stays readable
            unmapped.setdefault(vendor, Counter())[mask_secrets(str(code), cut=False)[:32]] += 1
    for vendor, n in stored.items():
        _child(metrics.observations, vendor, source).inc(n)
    for vendor, codes in unmapped.items():
        n = sum(codes.values())
        _child(metrics.unmapped, vendor).inc(n)
        left_out = _unmapped_log.allow(vendor, n)
        if left_out is not None:
            log.warning("vendor codes not in the mapping: recorded, not guessed", vendor=vendor,
                        source=source, reports=left_out + n, codes=[c for c, _ in codes.most_common(5)])
    for vendor, n in unknown.items():
        _child(metrics.poll_unknown_ids, vendor).inc(n)
        if (left_out := _unknown_log.allow(vendor, n)) is not None:
            log.warning("status calls about ids the vendor does not know (a wrong vendor_ref from "
                        "the sending application?): their messages end unknown", vendor=vendor,
                        reports=left_out + n)
    return sum(sum(c.values()) for c in unmapped.values())


_unmapped_log = Throttle()  # one warning per vendor a minute at most, with what was seen meanwhile
_unknown_log = Throttle()


_children: dict[tuple, object] = {}


def _child(metric, *labels: str):
    """A metric's child for these labels, looked up once (labels() is not cheap)."""
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def count_transitions(planned: Sequence[PlannedTransition], vendor_of: Mapping[int, str]) -> None:
    counts = Counter((vendor_of[t.message_id], t.to_state.name) for t in planned)
    for labels, n in counts.items():
        _child(metrics.transitions, *labels).inc(n)


def count_implausible_times(
        found: Iterable[tuple[str, datetime | None, datetime, datetime | None]]) -> None:
    """(vendor, event time, received at, its message's submission time or None) of reports:
    those whose vendor time no report can mean (core.reduce.plausible; the time received stands
    for it) counted per vendor, and logged at most once a minute per vendor."""
    odd: Counter[str] = Counter()
    example: dict[str, tuple[datetime, datetime, datetime | None]] = {}
    for vendor, event_at, received_at, submitted_at in found:
        if not plausible(event_at, received_at, submitted_at):
            odd[vendor] += 1
            example.setdefault(vendor, (event_at, received_at, submitted_at))
    for vendor, n in odd.items():
        _child(metrics.event_times_replaced, vendor).inc(n)
        if (left_out := _times_log.allow(vendor, n)) is not None:
            at, received, submitted = example[vendor]
            log.warning("vendor event times no report can mean (its clock or time zone is off? "
                        "vendors.<name>.naive_time_zone?): the time received stands for them",
                        vendor=vendor, reports=left_out + n, event_at=at.isoformat(),
                        received_at=received.isoformat(),
                        submitted_at=submitted.isoformat() if submitted else None)


_times_log = Throttle()
