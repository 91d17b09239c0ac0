"""Prometheus metrics. Labels are vendors, sources, states and vendor codes: never secrets."""
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

observations = Counter("tracker_observations_total", "Reports stored, by vendor and source",
                       ["vendor", "source"], registry=REGISTRY)
unmapped = Counter("tracker_unmapped_codes_total", "Reports whose vendor code is not mapped",
                   ["vendor", "code"], registry=REGISTRY)
transitions = Counter("tracker_transitions_total", "State changes, by vendor and new state",
                      ["vendor", "to_state"], registry=REGISTRY)
intake_rows = Counter("tracker_intake_rows_total", "Submission rows handled, by result",
                      ["result"], registry=REGISTRY)
polls = Counter("tracker_polls_total", "Vendor status calls, by vendor and outcome",
                ["vendor", "outcome"], registry=REGISTRY)
poll_seconds = Histogram("tracker_poll_seconds", "Vendor status call latency", ["vendor"],
                         registry=REGISTRY)
circuit_open = Gauge("tracker_circuit_open", "1 while a vendor's circuit is open", ["vendor"],
                     registry=REGISTRY)
postbacks = Counter("tracker_postbacks_total", "Postback requests, by vendor and HTTP status",
                    ["vendor", "status"], registry=REGISTRY)
postback_seconds = Histogram("tracker_postback_seconds", "Postback answer latency",
                             registry=REGISTRY,
                             buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5))
