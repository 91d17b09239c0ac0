"""Prometheus metrics. Labels are vendors, sources, states, vendor codes and component names:
never secrets."""
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

observations = Counter("tracker_observations_total", "Reports stored, by vendor and source",
                       ["vendor", "source"], registry=REGISTRY)
unmapped = Counter("tracker_unmapped_codes_total",
                   "Reports whose vendor code is not mapped (the codes: tracker.vendor_health)",
                   ["vendor"], registry=REGISTRY)
poll_unknown_ids = Counter("tracker_poll_unknown_ids_total",
                           "Status answers saying the vendor does not know the id asked about (a "
                           "wrong vendor_ref from the sending application?)", ["vendor"],
                           registry=REGISTRY)
event_times_replaced = Counter("tracker_event_times_replaced_total",
                               "Reports whose vendor event time no report can mean (over 10 minutes "
                               "ahead of receipt, over 10 minutes before its message's submission, "
                               "or over 400 days before receipt): the time received stands for it",
                               ["vendor"], registry=REGISTRY)
transitions = Counter("tracker_transitions_total", "State changes, by vendor and new state",
                      ["vendor", "to_state"], registry=REGISTRY)
intake_rows = Counter("tracker_intake_rows_total", "Submission rows handled, by result",
                      ["result"], registry=REGISTRY)
polls = Counter("tracker_polls_total", "Vendor status calls, by vendor and outcome",
                ["vendor", "outcome"], registry=REGISTRY)
poll_seconds = Histogram("tracker_poll_seconds", "Vendor status call latency", ["vendor"],
                         registry=REGISTRY)
vendor_slots = Gauge("tracker_vendor_slots",
                     "A vendor's concurrency slots this replica may use now (its part of the "
                     "deployment's `concurrency`, held under a lease: 0 when it holds none)",
                     ["vendor"], registry=REGISTRY)
poll_answers_dropped = Counter("tracker_poll_answers_dropped_total",
                               "Poll answers PostgreSQL refused even alone, written without their "
                               "raw payload or without their reports (the reading or the poll kept)",
                               ["vendor", "dropped"], registry=REGISTRY)
poll_answers_lost = Counter("tracker_poll_answers_lost_total",
                            "Claimed messages whose poll answers were not written: the claim's "
                            "lease had ended (asked again later)", ["vendor"], registry=REGISTRY)
circuit_open = Gauge("tracker_circuit_open",
                     "1 while a vendor's circuit is not closed (open, or half-open: probing)", ["vendor"],
                     registry=REGISTRY)
postbacks = Counter("tracker_postbacks_total", "Postback requests, by vendor and HTTP status",
                    ["vendor", "status"], registry=REGISTRY)
http_refused = Counter("tracker_http_refused_total",
                       "Requests the router refused before any handler: no such path (404), a "
                       "method the route does not take (405)", ["status"], registry=REGISTRY)
status_refused = Counter("tracker_status_refused_total",
                         "Requests for the status page without its token (or with a wrong one)",
                         registry=REGISTRY)
http_connections_refused = Counter("tracker_http_connections_refused_total",
                                   "Connections closed at once: the listener held "
                                   "http.max_connections, each holding a request",
                                   ["listener"], registry=REGISTRY)
http_malformed = Counter("tracker_http_malformed_total",
                         "Requests the HTTP parser refused (400, connection closed): tls (a TLS "
                         "handshake on the plain port), not_http (other bytes), bad_request",
                         ["kind"], registry=REGISTRY)
http_connections_shed = Counter("tracker_http_connections_shed_total",
                                "Connections closed to make room for a new one: the listener held "
                                "http.max_connections, and this one, the oldest such, no request",
                                ["listener"], registry=REGISTRY)
postbacks_previous_token = Counter("tracker_postbacks_previous_token_total",
                                   "Postback requests admitted by the token being rotated out "
                                   "(vendors.<vendor>.previous_postback_token) or signed with a "
                                   "secret being rotated out (Twilio's previous_auth_token, "
                                   "previous_shared_key_secret): while this rises, the vendor "
                                   "still uses the old one", ["vendor"], registry=REGISTRY)
postback_seconds = Histogram("tracker_postback_seconds", "Postback answer latency",
                             registry=REGISTRY,  # 0.5: PostbackAnswersSlow's; 10: Skycore gives up
                             buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1,
                                      2.5, 5, 10, 30))

log_lines_lost = Counter("tracker_log_lines_lost_total",
                         "Log lines that could not be written (the log stream's reader gone): "
                         "dropped, not raised", registry=REGISTRY)

# Supervision and backlogs (tracker.supervisor, /readyz). Component names are a fixed set.
component_failures = Counter("tracker_component_failures_total",
                             "Unexpected errors of a background component (it restarts), by component",
                             ["component"], registry=REGISTRY)
embedded_restarts = Counter("tracker_embedded_database_restarts_total",
                            "Times the embedded PostgreSQL cluster was found stopped (each is "
                            "started again unless its data directory is gone, counted once "
                            "however many starts it takes: tracker.db.keeper)",
                            registry=REGISTRY)
database_clock_offset = Gauge("tracker_database_clock_offset_seconds",
                              "The database's clock minus this host's, measured at start and "
                              "every 10 s; the tracker takes the database's time "
                              "(tracker.db.clock)", registry=REGISTRY)
database_up = Gauge("tracker_database_up",
                    "1 while this replica's last look at the database (the backlog sweep, every "
                    "10 s, and each /readyz) got an answer; 0 while it does not, or while the "
                    "database refuses work for want of resources (disk full or out of memory: "
                    "SQLSTATE 53100, 53200, in the last 30 s)",
                    registry=REGISTRY)
intake_waiting = Gauge("tracker_intake_waiting_rows",
                       "Submission rows not taken in yet (counted up to 100000)", registry=REGISTRY)
intake_oldest_age = Gauge("tracker_intake_oldest_age_seconds",
                          "How long the oldest submission row not taken in yet has waited",
                          registry=REGISTRY)
postbacks_waiting = Gauge("tracker_postbacks_waiting",
                          "Stored postbacks not applied yet (counted up to 100000)", registry=REGISTRY)
postbacks_oldest_age = Gauge("tracker_postbacks_oldest_age_seconds",
                             "How long the oldest stored postback not applied yet has waited",
                             registry=REGISTRY)

# Event sinks (tracker.sinks). Sink names come from the configuration, never URLs or secrets.
sink_lag = Gauge("tracker_sink_lag_events",
                 "Events a sink has not delivered yet (tracker.sink_status.events_behind)",
                 ["sink"], registry=REGISTRY)
sink_disabled = Gauge("tracker_sink_disabled",
                     "1 while a sink is disabled (its receiver answered 410 Gone; tracker sinks enable)",
                     ["sink"], registry=REGISTRY)
sink_deliveries = Counter("tracker_sink_deliveries_total",
                          "Delivery attempts by outcome: delivered, failed, throttled, gone, dead "
                          "(webhooks); delivered, duplicate, failed (NATS)",
                          ["sink", "outcome"], registry=REGISTRY)
sink_delivery_seconds = Histogram("tracker_sink_delivery_seconds",
                                  "From a transition's recording to its delivery by a sink",
                                  ["sink"], registry=REGISTRY,
                                  buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                                           60, 300, 1800, 7200, 86400))

# Outbox readers and retention (tracker.upkeep, tracker.retention). Consumer names are the
# consumers' own (sinks read as consumer 'sink:<name>'); kinds are a fixed set.
consumer_lag = Gauge("tracker_consumer_lag_events",
                     "Published events a consumer has not acknowledged yet", ["consumer"],
                     registry=REGISTRY)
consumer_lag_seconds = Gauge("tracker_consumer_lag_seconds",
                             "Age of the oldest event a consumer has not acknowledged yet (0: none)",
                             ["consumer"], registry=REGISTRY)
retention_removed = Counter("tracker_retention_removed_total", "Rows removed by retention, by kind",
                            ["kind"], registry=REGISTRY)
retention_errors = Counter("tracker_retention_errors_total",
                           "Retention batches that failed (the next sweep goes on), by kind",
                           ["kind"], registry=REGISTRY)
retention_behind = Gauge("tracker_retention_behind",
                         "1 while the last sweep of a kind stopped with rows left to remove "
                         "(its time budget ran out, or a batch failed)", ["kind"], registry=REGISTRY)
retention_last_run = Gauge("tracker_retention_last_run_timestamp_seconds",
                           "When the last retention sweep finished (Unix time; 0: none yet)",
                           registry=REGISTRY)


def at_zero(vendors, retention_kinds, listeners=("listen",)) -> None:
    """The counters' series a dashboard or alert names, made at 0 when the daemon starts: a series
    that first appears at 1 shows no increase() in Prometheus, so a one-off unmapped code (or a
    flood of connections shorter than a scrape) never alerted. (Components' failure counters
    start at 0 as each component is first supervised.)"""
    for v in vendors:
        unmapped.labels(v)
        poll_unknown_ids.labels(v)
        poll_answers_lost.labels(v)
        postbacks.labels(v, "503")
    for kind in retention_kinds:
        retention_errors.labels(kind)
    for listener in listeners:
        http_connections_refused.labels(listener)
        http_connections_shed.labels(listener)
