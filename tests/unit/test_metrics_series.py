"""The series alerts in deploy/prometheus-alerts.yml read: there from the start at 0 (a series
that first appears at 1 has no increase(), so a one-off unmapped code never alerted), and a
circuit gauge that does not read 0 while a vendor that is still down is being probed."""
from __future__ import annotations

from tracker import metrics, retention
from tracker.config_types import VENDORS, VendorConfig
from tracker.poller.clock import ManualClock
from tracker.poller.health import VendorHealth
from tracker.supervisor import Supervisor
from tracker.config_types import HealthConfig


def sample(name: str, **labels) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_counters_alerts_read_start_at_zero():
    metrics.at_zero(VENDORS, retention.SWEPT)
    for v in VENDORS:
        assert sample("tracker_unmapped_codes_total", vendor=v) is not None
    for kind in retention.SWEPT:  # the poll counters' fold too
        assert sample("tracker_retention_errors_total", kind=kind) is not None
    Supervisor(HealthConfig()).health("a-component-never-seen")
    assert sample("tracker_component_failures_total", component="a-component-never-seen") == 0


def test_a_polled_vendors_circuit_gauge_reads_0_from_the_start():
    # it had no series until the circuit first changed: "No data" on a healthy daemon's panel
    assert sample("tracker_circuit_open", vendor="healthy-from-start") is None
    VendorHealth(VendorConfig(name="healthy-from-start"), ManualClock())
    assert sample("tracker_circuit_open", vendor="healthy-from-start") == 0


def test_the_circuit_gauge_stays_1_while_the_half_open_probe_is_out():
    cfg = VendorConfig(name="gauge-test", circuit_failures=2, circuit_reset_s=30.0)
    clock = ManualClock()
    h = VendorHealth(cfg, clock)
    for _ in range(2):
        h.record("error", "HTTP 503")
    assert h.is_open and sample("tracker_circuit_open", vendor="gauge-test") == 1
    clock.advance(31)
    may, probe = h.allow()
    assert may and probe  # half-open: one probe out, the vendor not yet heard from
    assert sample("tracker_circuit_open", vendor="gauge-test") == 1  # read 0 for the probe's timeout
    h.record("ok")
    assert sample("tracker_circuit_open", vendor="gauge-test") == 0


def test_an_idle_or_slotless_vendor_after_its_circuit_wait_does_not_read_open_for_ever():
    clock = ManualClock()
    for name in ("idle-vendor", "slotless-vendor"):
        h = VendorHealth(VendorConfig(name=name, circuit_failures=1, circuit_reset_s=30.0), clock)
        h.record("error", "HTTP 503")
        assert sample("tracker_circuit_open", vendor=name) == 1
        clock.advance(31)
        if name == "idle-vendor":  # the probe found nothing due to probe with
            assert h.allow() == (True, True)
            h.release_probe()
        else:  # this replica holds no concurrency slot: no probe can go from here
            h.rest()
        assert (h.circuit.state, h.circuit.probing) == ("half_open", False)
        assert sample("tracker_circuit_open", vendor=name) == 0


async def test_the_slots_gauge_reads_what_this_replica_may_use_now():
    from tracker.poller.shared_limits import Slots
    from tracker.poller.slot_leases import SlotLeases
    clock = ManualClock()
    slots = Slots(4, clock)
    SlotLeases("replica-x", lambda: None, clock).add(VendorConfig(name="slots-gauge"), slots)
    assert sample("tracker_vendor_slots", vendor="slots-gauge") == 0  # none until a renewal
    await slots.resize(2, clock.monotonic() + 10)
    assert sample("tracker_vendor_slots", vendor="slots-gauge") == 2
    clock.advance(11)  # the lease ended, not renewed
    assert sample("tracker_vendor_slots", vendor="slots-gauge") == 0
