"""Ground truth: each message the sandbox accepted, its planned timeline, and what it ends as.

A message's timeline is a list of (monotonic time, state) points fixed when the vendor accepts
it: `accepted`, then `sent`, optionally `retrying` and `telco_retrying` (engageSPARK's temporary
failures: a hand-off, a telco's receipt), then the
final outcome (and `read` after `delivered` for Sparrow "seen"). A carrier that never sends a
receipt leaves the timeline at `sent`: the tracker should end such a message `unknown` after its
tracking window, so the truth says final `unknown`, last real state `sent`, fate `no_receipt`.
Status answers and postbacks are both read off this timeline, so they always agree.

One key may hold several timelines (Sparrow: a number listed once valid and once mistyped in one
compose is accepted and refused under the same (batch, digits)). The vendor then reports both,
and a tracker keeps the highest state ever reported, so the truth is the highest-ranked of them:
`merged_truth`.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Collection

from tracker.sandbox.knobs import Knobs

FATES = ("delivered", "read", "failed", "expired", "rejected", "no_receipt")
FINAL_STATES = ("expired", "rejected", "failed", "delivered", "read")
RETRYING = ("retrying", "telco_retrying")  # engageSPARK, still trying: the tracker has heard `sent`
RANK = {s: i for i, s in enumerate(("submitted", "accepted", "sent", "unknown", *FINAL_STATES))}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def message_rng(seed: int, vendor: str, ref: str | None, recipient: str) -> random.Random:
    """Randomness for one message that does not depend on the order requests arrive in."""
    return random.Random(f"{seed}|{vendor}|{ref}|{recipient}")


@dataclass(slots=True, eq=False)
class Message:
    vendor: str
    ref: str | None  # the vendor's id; None when the vendor refused it without one
    recipient: str  # digits
    keyed_by_recipient: bool  # Sparrow: (batch, recipient) is the key
    fate: str  # one of FATES, as far as this vendor can tell it
    code: str  # the vendor's own code or text for the outcome
    timeline: list[tuple[float, str]]
    t0: float  # monotonic time of acceptance
    wall0: datetime  # wall time of acceptance
    data: dict[str, Any] = field(default_factory=dict)  # vendor specifics

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        keyed = self.keyed_by_recipient or self.ref is None  # refused without an id
        return (self.vendor, self.ref, self.recipient if keyed else None)

    def wall(self, t: float) -> datetime:
        return self.wall0 + timedelta(seconds=t - self.t0)

    def state_at(self, now: float) -> tuple[str, float]:
        """The vendor-side state at monotonic time `now`, and when it began."""
        current = self.timeline[0]
        for point in self.timeline:
            if point[0] <= now:
                current = point
            else:
                break
        return current[1], current[0]

    def time_of(self, state: str) -> float | None:
        for t, s in self.timeline:
            if s == state:
                return t
        return None

    @property
    def last_real(self) -> str:
        return self.timeline[-1][1]

    @property
    def final(self) -> str:
        """The state the tracker should end with."""
        last = self.last_real
        return last if last in FINAL_STATES else "unknown"

    def expected(self, window_s: float, pushed: Collection[str] = ()) -> str:
        """What a tracker whose window closes `window_s` real seconds after acceptance ends
        with: the highest final state it can hear, one reached within the window (a poll finds
        it) or one the vendor pushes (`pushed`: a late push overrides even `unknown`); else
        `unknown`. Polling stops at a final state or at the window's close, so a poll-only
        vendor's later receipt is never heard. The tracker's window starts at its submission
        row, a little after acceptance, and a state reached just before the close is heard only
        if a poll comes in between: outcomes near the close may go either way."""
        close = self.t0 + window_s
        heard = [s for t, s in self.timeline if s in FINAL_STATES and (t <= close or s in pushed)]
        return max(heard, key=RANK.__getitem__, default="unknown")

    @property
    def settles_at(self) -> float | None:
        return self.timeline[-1][0] if self.last_real in FINAL_STATES else None

    def truth(self, now: float) -> dict[str, Any]:
        state, _ = self.state_at(now)
        settles = self.settles_at
        return {
            "final": self.final,
            "last_real": self.last_real,
            "fate": self.fate,
            "current": "sent" if state in RETRYING else state,
            "settled": settles is not None and settles <= now,
            "code": self.code,
            "number": self.recipient,
            "accepted_at": iso(self.wall0),
            "settles_at": iso(self.wall(settles)) if settles is not None else None,
        }


def merged_truth(msgs: list[Message], now: float) -> dict[str, Any]:
    """The truth of one key over all its timelines: the highest-ranked final wins (the first
    recorded on a tie); it has settled when every timeline has played out."""
    if len(msgs) == 1:
        return msgs[0].truth(now)
    views = [m.truth(now) for m in msgs]
    best = max(range(len(msgs)), key=lambda i: (RANK[views[i]["final"]], -i))
    out = dict(views[best], timelines=len(msgs))
    for name in ("current", "last_real"):
        out[name] = max((v[name] for v in views), key=lambda s: RANK.get(s, RANK["sent"]))
    out["settled"] = msgs[best].settles_at is not None and all(
        m.settles_at is None or m.settles_at <= now for m in msgs)
    return out


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def draw_fate(knobs: Knobs, rng: random.Random, fate_map: dict[str, str]) -> str:
    weights = knobs.fate_weights()
    names = list(weights)
    fate = rng.choices(names, weights=[weights[n] for n in names])[0]
    return fate_map.get(fate, fate)


def draw_latency(knobs: Knobs, rng: random.Random) -> float:
    """Vendor seconds from sent to the receipt."""
    m = knobs.latency_s
    if knobs.latency == "fixed":
        value = m
    elif knobs.latency == "uniform":
        value = rng.uniform(0.0, m)
    elif knobs.latency == "exponential":
        value = rng.expovariate(1.0 / m) if m > 0 else 0.0
    else:
        value = m * math.exp(rng.gauss(0.0, knobs.latency_sigma)) if m > 0 else 0.0
    return min(max(value, 0.0), knobs.latency_max_s)


def plan(vendor: str, ref: str, recipient: str, *, knobs: Knobs, now: float, wall: datetime,
         fate_map: dict[str, str], codes: dict[str, tuple[str, ...]],
         keyed_by_recipient: bool = False, temp_failures: bool = False,
         data: dict[str, Any] | None = None) -> tuple[Message, random.Random]:
    """Plan an accepted message's fate and timeline. Returns it with its own rng, which the vendor
    may keep drawing from (codes, postback quirks) deterministically."""
    rng = message_rng(knobs.seed, vendor, ref, recipient)
    fate = draw_fate(knobs, rng, fate_map)
    code = rng.choice(codes[fate])
    sent = now + knobs.scaled(knobs.sent_after_s * rng.uniform(0.5, 1.5))
    final = sent + knobs.scaled(draw_latency(knobs, rng))
    timeline: list[tuple[float, str]] = [(now, "accepted"), (sent, "sent")]
    if fate == "no_receipt":
        pass
    else:
        if temp_failures and rng.random() < knobs.temp_failure:
            timeline.append((sent + (final - sent) * 0.4, "retrying"))
        if temp_failures and knobs.telco_retry and rng.random() < knobs.telco_retry:
            timeline.append((sent + (final - sent) * 0.6, "telco_retrying"))
        if fate == "read":
            timeline.append((final, "delivered"))
            final += knobs.scaled(draw_latency(knobs, rng) * 0.5)
        timeline.append((final, fate))
    msg = Message(vendor=vendor, ref=ref, recipient=recipient,
                  keyed_by_recipient=keyed_by_recipient, fate=fate, code=code,
                  timeline=timeline, t0=now, wall0=wall, data=data or {})
    return msg, rng


def refused(vendor: str, ref: str | None, recipient: str, code: str, *, now: float,
            wall: datetime, keyed_by_recipient: bool = False,
            data: dict[str, Any] | None = None) -> Message:
    """A message the vendor refused at send time: rejected at once."""
    return Message(vendor=vendor, ref=ref, recipient=recipient,
                   keyed_by_recipient=keyed_by_recipient, fate="rejected", code=code,
                   timeline=[(now, "rejected")], t0=now, wall0=wall, data=data or {})
