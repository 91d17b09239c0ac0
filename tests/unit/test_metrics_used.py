"""Every metric tracker.metrics defines is changed somewhere in the daemon's code (incremented,
set, observed or cleared), not merely declared: a metric nobody moves reads as 'all is well'."""
from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from tracker import metrics

SOURCE = Path(metrics.__file__).resolve().parent


def test_every_metric_is_moved_by_the_code():
    code = {p: "\n".join(line for line in p.read_text().splitlines() if not line.lstrip().startswith("#"))
            for p in SOURCE.rglob("*.py") if p.name != "metrics.py"}
    defined = {name for name, obj in vars(metrics).items() if isinstance(obj, MetricWrapperBase)}
    assert len(defined) >= 20
    # `metrics.x.labels(...).inc()`, `metrics.x.set(...)`, `_child(metrics.x, ...)`: the metric
    # handed to code that moves it.
    moved = re.compile(r"\bmetrics\.(\w+)(?:\.(?:labels|inc|set|observe|clear|dec)\(|\s*,)")
    used = {m for text in code.values() for m in moved.findall(text)}
    assert defined <= used, f"declared but never moved: {sorted(defined - used)}"
