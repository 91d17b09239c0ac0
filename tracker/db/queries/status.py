"""The status page, the rollup and retention (tracker.http.status, tracker.rollup,
tracker.retention; sql/009)."""

# --- status and retention (tracker.rollup, tracker.http.status, tracker.retention; sql/009) -----

# Fold the route deltas committed so far into the rollups (sql/009: tracker.fold_route_deltas).
FOLD_ROUTE_DELTAS = "SELECT tracker.fold_route_deltas()"

# Each outbox consumer (sinks are consumers 'sink:<name>'): committed events it has not
# acknowledged yet, published or not (as tracker.sink_status counts them: while publication is
# held up, by a session holding the publisher row, the events wait unpublished and
# every consumer is behind by them), and how old the oldest of them is (a lookup by the unique
# pos index per consumer; the unpublished ones through the partial index transitions_unpublished).
CONSUMER_LAG = """
SELECT c.consumer, greatest(p.last_pos - c.acked_pos, 0) + u.unpublished AS events,
       extract(epoch FROM clock_timestamp() - least(
           (SELECT t.recorded_at FROM tracker.transitions t
            WHERE t.pos > c.acked_pos ORDER BY t.pos LIMIT 1),
           u.oldest))::float8 AS age_s
FROM tracker.consumers c
CROSS JOIN tracker.event_publisher p
CROSS JOIN (SELECT count(*) AS unpublished, min(recorded_at) AS oldest
            FROM tracker.transitions WHERE pos IS NULL) u
ORDER BY c.consumer
"""

# `tracker consumers` (tracker.consumers; sql/023).
CONSUMER_STATUS = "SELECT * FROM tracker.consumer_status ORDER BY consumer"
REGISTER_CONSUMER = "SELECT tracker.register_consumer($1)"
FORGET_CONSUMER = "SELECT tracker.forget_consumer($1)"

# The status page reads in one read-only transaction that never runs long. No JIT: on a
# database with the default jit = on and tables not analyzed yet, the planner's estimates
# passed jit_above_cost and two of the page's queries spent ~200 ms compiling for a few rows.
STATUS_LIMITS = "SET LOCAL statement_timeout = '3s'; SET LOCAL jit = off"

# Per vendor that is enabled or has messages in flight, enabled or not (a vendor disabled with
# messages still in flight has them stuck; found by a skip scan of the partial index
# messages_in_flight, one probe per such vendor): messages in flight (counted up to $1: an
# index-only scan of messages_in_flight), and those silent longer than the vendor is expected to
# take (tracker.stuck_messages' rule, with its expected_final_s: the configuration's, $2 names,
# $3 times, which the daemon writes to vendor_settings at start; counted up to $4: the index
# finds those submitted before then, each then read for its last report, oldest first: the
# oldest stuck one's submission time comes with the count). $5: which of $2 are enabled.
STATUS_IN_FLIGHT = """
WITH RECURSIVE busy AS (
    (SELECT vendor FROM tracker.messages WHERE state < 'unknown' ORDER BY vendor LIMIT 1)
    UNION ALL
    SELECT n.vendor FROM busy b
    CROSS JOIN LATERAL (SELECT m.vendor FROM tracker.messages m
                        WHERE m.state < 'unknown' AND m.vendor > b.vendor
                        ORDER BY m.vendor LIMIT 1) n
), v AS (
    SELECT coalesce(b.vendor, c.vendor) AS vendor,
           coalesce(c.expected_final_s, s.expected_final_s, 3600) AS expected_final_s
    FROM busy b
    FULL JOIN unnest($2::text[], $3::float8[], $5::boolean[]) AS c(vendor, expected_final_s, enabled)
      ON c.vendor = b.vendor
    LEFT JOIN tracker.vendor_settings s ON s.vendor = coalesce(b.vendor, c.vendor)
    WHERE c.enabled OR b.vendor IS NOT NULL
)
SELECT v.vendor,
       (SELECT count(*) FROM (SELECT 1 FROM tracker.messages m
                              WHERE m.vendor = v.vendor AND m.state < 'unknown' LIMIT $1) f) AS in_flight,
       st.stuck, st.oldest_stuck_at
FROM v
CROSS JOIN LATERAL (
    SELECT count(*) AS stuck, min(s.submitted_at) AS oldest_stuck_at
    FROM (SELECT m.submitted_at FROM tracker.messages m
          WHERE m.vendor = v.vendor AND m.state < 'unknown'
            AND m.submitted_at < now() - make_interval(secs => v.expected_final_s)
            AND coalesce(m.last_report_at, m.submitted_at)
                < now() - make_interval(secs => v.expected_final_s)
          ORDER BY m.submitted_at LIMIT $4) s
) st
"""

# Per vendor, messages submitted since $1 (by hour), from the rollup.
STATUS_VENDOR_FIGURES = "SELECT * FROM tracker.vendor_figures_since($1)"

# Circuit state and since when (sql/024), last successful poll, last error and when, replicas
# polling (vendor_health without its unmapped-code part, which the planner leaves out when none
# of its columns is asked for).
STATUS_POLL_HEALTH = """
SELECT vendor, circuit_state, circuit_since, last_success_at, last_error, last_error_at,
       polling_replicas
FROM tracker.vendor_health
"""

# The replicas polling now, as tracker.vendor_health counts them (running, reported in the
# last two minutes), with the vendors each polls. poll_stats is a row per vendor and replica.
STATUS_POLLING_REPLICAS = """
SELECT replica, array_agg(vendor ORDER BY vendor) AS vendors, max(updated_at) AS reported_at
FROM tracker.poll_stats
WHERE stopped_at IS NULL AND updated_at > now() - interval '2 minutes'
GROUP BY replica
ORDER BY replica
"""

# Submission rows refused at intake (error set) that reached the database since $1, per vendor,
# with the latest refusal's reason: a walk of the partial index submissions_refused (sql/021)
# from the newest row back, one probe per row, that ends at the first row older than $1 (rows
# are numbered as they arrive) or after $2 rows (then the counts are lower bounds: capped).
# Rows that named no message (message_count 0, no error) are in the index but not counted.
STATUS_REFUSED = """
WITH RECURSIVE walk AS (
    (SELECT id, vendor, error, created_at, 1 AS n FROM tracker.submissions
     WHERE error IS NOT NULL OR message_count = 0 ORDER BY id DESC LIMIT 1)
    UNION ALL
    SELECT s.id, s.vendor, s.error, s.created_at, w.n + 1 FROM walk w
    CROSS JOIN LATERAL (SELECT id, vendor, error, created_at FROM tracker.submissions
                        WHERE (error IS NOT NULL OR message_count = 0) AND id < w.id
                        ORDER BY id DESC LIMIT 1) s
    WHERE w.created_at >= $1 AND w.n < $2
)
SELECT vendor, count(*) AS refused, (array_agg(error ORDER BY id DESC))[1] AS last_error,
       max(created_at) AS last_at, (SELECT max(n) FROM walk) >= $2 AS capped
FROM walk
WHERE error IS NOT NULL AND created_at >= $1
GROUP BY vendor
"""

# The distinct unmapped (vendor, code) pairs, up to $1: a skip scan of observations_unmapped,
# one index probe per pair, however many reports carry them. For the first $3 codes of each
# vendor (those its card lists): its reports, counted up to $2, and the latest time among them
# (every report's when fewer than $2: the index has no time, so each counted one is read).
STATUS_UNMAPPED_CODES = """
WITH RECURSIVE codes AS (
    (SELECT vendor, code FROM tracker.observations
     WHERE state IS NULL AND code IS NOT NULL ORDER BY vendor, code LIMIT 1)
    UNION ALL
    SELECT n.vendor, n.code FROM codes c
    CROSS JOIN LATERAL (SELECT o.vendor, o.code FROM tracker.observations o
                        WHERE o.state IS NULL AND (o.vendor, o.code) > (c.vendor, c.code)
                        ORDER BY o.vendor, o.code LIMIT 1) n
), listed AS (
    SELECT vendor, code, row_number() OVER (PARTITION BY vendor ORDER BY code) AS nth
    FROM (SELECT vendor, code FROM codes LIMIT $1) c
)
SELECT l.vendor, l.code, CASE WHEN l.nth <= $3 THEN n.reports END AS reports, n.last_seen_at
FROM listed l
CROSS JOIN LATERAL (
    SELECT count(*) AS reports, max(o.received_at) AS last_seen_at
    FROM (SELECT o.received_at FROM tracker.observations o
          WHERE o.state IS NULL AND o.vendor = l.vendor AND o.code = l.code AND l.nth <= $3
          LIMIT $2) o
) n
ORDER BY l.vendor, l.code
"""

# Each consumer that is not a sink (tracker.consumer_status, sql/023: a sink's lag, its pending
# deliveries included, is tracker.sink_status'), events not acknowledged and the oldest's age.
STATUS_CONSUMERS = """
SELECT consumer, events_behind AS events, extract(epoch FROM oldest_unacked_age)::float8 AS age_s
FROM tracker.consumer_status ORDER BY consumer
"""

# Per vendor and hour since the hour of $1: volume and delivered ratio (the page's charts).
STATUS_HOURLY = """
SELECT hour, vendor, total, delivered_ratio FROM tracker.vendor_hourly
WHERE hour >= date_trunc('hour', $1::timestamptz, 'UTC')
"""

# The $2 routes with the most messages submitted on or after day $1 (UTC).
STATUS_TOP_ROUTES = """
SELECT r.vendor, nullif(r.country, '') AS country, nullif(r.operator, '') AS operator,
       sum(r.total) AS total,
       round(sum(r.delivered)::numeric / nullif(sum(r.total), 0), 4) AS delivered_ratio,
       tracker.hist_quantile(tracker.hist_merge(r.latency), 0.5) AS p50_s
FROM (
    SELECT vendor, country, operator, latency, delivered + read AS delivered,
           submitted + accepted + sent + unknown + expired + rejected + failed + delivered + read AS total
    FROM tracker.route_days WHERE day >= $1
    UNION ALL
    SELECT vendor, country, operator, latency, delivered + read,
           submitted + accepted + sent + unknown + expired + rejected + failed + delivered + read
    FROM tracker.route_deltas_by_hour WHERE hour >= $1::timestamp AT TIME ZONE 'UTC'
) r
GROUP BY r.vendor, r.country, r.operator
HAVING sum(r.total) > 0
ORDER BY total DESC, r.vendor, r.country, r.operator
LIMIT $2
"""

# What retention last removed, per kind.
# The last run of each kind ($1: tracker.retention.SWEPT), one probe of (kind, id) each: a
# DISTINCT ON over the table sorted 30 days of runs (78,000 rows, 69 ms) to show nine; this takes 0.1 ms.
STATUS_RETENTION = """
SELECT r.kind, r.finished_at, r.removed, r.error
FROM unnest($1::text[]) AS k(kind)
CROSS JOIN LATERAL (SELECT * FROM tracker.retention_runs x WHERE x.kind = k.kind
                    ORDER BY x.id DESC LIMIT 1) r
ORDER BY r.kind
"""

# The sinks' view (sql/008, issue #13), where it exists.
SINK_STATUS_EXISTS = "SELECT to_regclass('tracker.sink_status') IS NOT NULL"
STATUS_SINKS = "SELECT * FROM tracker.sink_status ORDER BY 1"

# Retention (tracker.retention): one sweeper at a time (a session lock: the sweep's batches are
# transactions of their own).
RETENTION_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1))"
RETENTION_UNLOCK = "SELECT pg_advisory_unlock(hashtext($1))"

# When kind $1's sweep starts, its cutoff ($2 days ago), and the id its walk goes on after
# (sql/021: where the last sweep ran out of time; 0 once a walk has reached young rows).
RETENTION_START = """
SELECT now(), now() - make_interval(secs => $2::float8 * 86400),
       coalesce((SELECT after_id FROM tracker.retention_cursors WHERE kind = $1), 0)
"""

RETENTION_KEEP_CURSOR = """
INSERT INTO tracker.retention_cursors (kind, after_id) VALUES ($1, $2)
ON CONFLICT (kind) DO UPDATE SET after_id = EXCLUDED.after_id, updated_at = now()
"""

# A batch never waits long for a lock, nor runs long, nor waits for its WAL to reach the disk
# (a batch lost in a crash is removed again by the next sweep: the postbacks' commits keep the
# disk's flushes to themselves).
RETENTION_BATCH_LIMITS = """
SET LOCAL lock_timeout = '1s'; SET LOCAL statement_timeout = '30s'; SET LOCAL synchronous_commit = off
"""

# A batch of a kind that reads the acknowledged horizon (RETENTION_READS_HORIZON) holds its lock
# shared until it commits, taken before the batch's statement (which then reads the horizon in a
# snapshot of its own): no consumer is registered meanwhile (sql/023).
RETENTION_HOLD_HORIZON = "SELECT tracker.lock_horizon(false)"
RETENTION_READS_HORIZON = frozenset({"transitions", "final_messages"})

# One batch of a kind (sql/009: tracker.retain_<kind>): $1 after id, $2 cutoff, $3 rows examined.
RETENTION_BATCH = {
    "orphans": "SELECT * FROM tracker.retain_orphans($1, $2, $3)",
    "postbacks": "SELECT * FROM tracker.retain_postbacks($1, $2, $3)",
    "observations": "SELECT * FROM tracker.retain_observations($1, $2, $3)",
    "transitions": "SELECT * FROM tracker.retain_transitions($1, $2, $3)",
    "final_messages": "SELECT * FROM tracker.retain_final_messages($1, $2, $3)",
    "unreferenced_rows": "SELECT * FROM tracker.retain_unreferenced_rows($1, $2, $3)",  # sql/028
    "refused_rows": "SELECT * FROM tracker.retain_refused_rows($1, $2, $3)",
    "sink_dead_letters": "SELECT * FROM tracker.retain_sink_dead_letters($1, $2, $3)",  # sql/025
    "poll_stats": "SELECT * FROM tracker.retain_poll_stats($1, $2, $3)",  # sql/028: folded, not removed
}

RETENTION_RECORD_RUN = """
INSERT INTO tracker.retention_runs (kind, started_at, cutoff, removed, also, batches, error)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
"""

RETENTION_FORGET_RUNS = """
DELETE FROM tracker.retention_runs WHERE finished_at < now() - make_interval(days => $1)
"""
