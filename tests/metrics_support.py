"""Reading the daemon's Prometheus metrics in tests (tracker.metrics.REGISTRY, this process's)."""
from __future__ import annotations

from tracker.metrics import REGISTRY


def metric(name: str, **labels) -> float:
    """A sample's value now; 0 for one never set (a labelled counter not incremented yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def failures(component: str) -> float:
    """How often the supervisor saw `component` fail (tracker_component_failures_total)."""
    return metric("tracker_component_failures_total", component=component)
