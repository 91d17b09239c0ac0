"""Log lines that a steady fault or anyone who can reach a listener could repeat for every
request or row (a vendor that changed its payload, a receiver gone for days): at most one per
key a minute, the next one saying how many were left out meanwhile. The metrics count every one;
the log only has to say that it goes on."""
from __future__ import annotations

import math
import time
from collections import Counter
from typing import Callable, Hashable


class Throttle:
    """`left_out = throttle.allow(key)`: None, leave this one out (it is counted); else log it,
    with `left_out` (how many were left out for this key since its last line). Keys are few
    (vendors, sinks, statuses): nothing here is ever dropped."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s, self.clock = every_s, clock
        self.last: dict[Hashable, float] = {}
        self.left_out: Counter[Hashable] = Counter()

    def allow(self, key: Hashable, n: int = 1) -> int | None:
        """`n`: how many this call stands for (a batch's reports)."""
        now = self.clock()
        if now - self.last.get(key, -math.inf) < self.every_s:
            self.left_out[key] += n
            return None
        self.last[key] = now
        return self.left_out.pop(key, 0)
