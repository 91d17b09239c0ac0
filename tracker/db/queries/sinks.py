"""Sinks (tracker.sinks, sql/008_sinks.sql, docs/events.md): readers, batches, deliveries."""

# --- sinks (tracker.sinks, sql/008_sinks.sql, docs/events.md) -----------------------------------

# $1 names, $2 kinds ('webhook' | 'nats'). A sink's cursor is consumer 'sink:<name>'. `new`:
# the row was made now (a sink never run, or forgotten): its cursor starts at the oldest event kept.
REGISTER_SINKS = """
INSERT INTO tracker.sinks (name, kind, consumer)
SELECT n, k, 'sink:' || n FROM unnest($1::text[], $2::text[]) AS u(n, k)
ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, configured_at = now()
RETURNING name, created_at = configured_at AS new
"""

# The daemons running each sink (sql/027): runner $2 runs sinks $1 now; the names returned are
# those that still have their row (a missing one was forgotten under the daemon). FOR KEY SHARE:
# a forget under way (FOR UPDATE) is waited for, and a row it deleted is skipped, not an error.
SEE_SINKS = """
WITH s AS (SELECT name FROM tracker.sinks WHERE name = ANY($1::text[]) FOR KEY SHARE)
INSERT INTO tracker.sink_runners AS r (sink, runner, seen_at)
SELECT name, $2, now() FROM s
ON CONFLICT (sink, runner) DO UPDATE SET seen_at = now()
RETURNING r.sink
"""

RELEASE_SINK_RUNNER = "DELETE FROM tracker.sink_runners WHERE runner = $1"

# Rows of daemons killed without a stop, long after they stopped counting ($1 seconds).
DROP_OLD_SINK_RUNNERS = """
DELETE FROM tracker.sink_runners WHERE seen_at < now() - make_interval(secs => $1::float8)
"""

SINK_KIND = "SELECT kind FROM tracker.sinks WHERE name = $1"

# A NATS sink's read and acknowledgement, by sink name ($1): nothing is read, and no cursor is
# made again (at position 0, by ack_events), for a sink whose row is gone.
READ_SINK_EVENTS = """
SELECT r.* FROM tracker.sinks s CROSS JOIN LATERAL tracker.read_events(s.consumer, $2) r
WHERE s.name = $1
"""

ACK_SINK_EVENTS = "SELECT tracker.ack_events(s.consumer, $2) FROM tracker.sinks s WHERE s.name = $1"

# The reader lease: who reads the outbox for sink $1 (token $2, for $3 seconds). True: ours.
# Also the sink's shared state: disabled (a 410, on any replica), paused (seconds left). A
# disabled sink's lease is not taken.
TAKE_SINK_READER = """
WITH taken AS (
    UPDATE tracker.sinks SET reader = $2, reader_until = now() + make_interval(secs => $3::float8)
    WHERE name = $1 AND disabled_at IS NULL
      AND (reader IS NULL OR reader = $2 OR reader_until <= now())
    RETURNING true AS ours
)
SELECT coalesce((SELECT ours FROM taken), false) AS ours, s.disabled_at IS NOT NULL AS disabled,
       greatest(extract(epoch FROM s.paused_until - now()), 0)::float8 AS paused_s
FROM tracker.sinks s WHERE s.name = $1
"""

# Events of sink $1 after its cursor and after position $2, up to $3 (sql/008_sinks.sql).
READ_SINK_BATCH = "SELECT * FROM tracker.read_sink_batch($1, $2, $3)"

DROP_SINK_READER = "UPDATE tracker.sinks SET reader = NULL, reader_until = NULL WHERE name = $1 AND reader = $2"


# A read batch settled: what was not delivered goes into the table as it stands ($3..: one
# element per event: attempts made, seconds until due, 'pending' | 'dead', claimed by $2 (in
# flight: leased for $13 seconds), last status and error), in the transaction that moves the
# cursor past the batch ($14 consumer, $15 its last event).
SETTLE_SINK_BATCH = """
WITH ins AS (
    INSERT INTO tracker.sink_deliveries AS d (
        sink, event_id, pos, message_id, recorded_at, body, attempts, next_attempt_at, status,
        claim, claimed_until, first_attempt_at, last_attempt_at, last_status, last_error, dead_at)
    SELECT $1, u.event_id, u.pos, u.message_id, u.recorded_at, u.body, u.attempts,
           now() + make_interval(secs => u.retry_in_s), u.status,
           CASE WHEN u.claimed THEN $2 END,
           CASE WHEN u.claimed THEN now() + make_interval(secs => $13::float8) END,
           CASE WHEN u.attempts > 0 THEN now() END, CASE WHEN u.attempts > 0 THEN now() END,
           u.last_status, u.last_error, CASE WHEN u.status = 'dead' THEN now() END
    FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::timestamptz[], $7::bytea[], $8::int[],
                $9::float8[], $10::text[], $11::boolean[], $12::int[], $16::text[])
         AS u(event_id, pos, message_id, recorded_at, body, attempts, retry_in_s, status, claimed,
              last_status, last_error)
    ON CONFLICT (sink, event_id) DO NOTHING
    RETURNING 1
), err AS (  -- the batch's latest error (a dead letter's too): the sink's last_error
    SELECT u.last_error FROM unnest($3::bigint[], $16::text[]) AS u(event_id, last_error)
    WHERE u.last_error IS NOT NULL ORDER BY u.event_id DESC LIMIT 1
), ok AS (  -- $17: some of the batch was delivered (the sink's row: at most once a second)
    UPDATE tracker.sinks SET
        last_success_at = CASE WHEN $17 THEN now() ELSE last_success_at END,
        last_error = coalesce((SELECT last_error FROM err), last_error),
        last_error_at = CASE WHEN EXISTS (SELECT FROM err) THEN now() ELSE last_error_at END
    WHERE name = $1 AND (EXISTS (SELECT FROM err) OR $17 AND (last_success_at IS NULL
                                                         OR last_success_at < now() - interval '1 second'))
    RETURNING 1
)
SELECT tracker.ack_events($14, $15), (SELECT count(*) FROM ins)
FROM tracker.sinks WHERE name = $1 AND consumer = $14  -- no row: a sink forgotten (no cursor made again)
"""

# Due deliveries, leased to claim $4 for $3 seconds. A row waits while an earlier event of its
# message is pending for this sink (claimed or not): per message, one at a time, in order.
# The lease columns are in no index, so that a claim is an in-place (HOT) update; the rows in
# flight sit at the head of the due index and are stepped over.
CLAIM_SINK_DELIVERIES = """
WITH due AS MATERIALIZED (
    SELECT d.event_id
    FROM tracker.sink_deliveries d
    WHERE d.sink = $1 AND d.status = 'pending' AND d.next_attempt_at <= now()
      AND (d.claimed_until IS NULL OR d.claimed_until <= now())
      -- the message's first pending event (a subplan on the message index, whatever the
      -- statistics say: an anti-join planned on a table filled since its last ANALYZE went
      -- quadratic)
      AND d.pos = (SELECT e.pos FROM tracker.sink_deliveries e
                   WHERE e.sink = $1 AND e.message_id = d.message_id AND e.status = 'pending'
                   ORDER BY e.pos LIMIT 1)
    ORDER BY d.next_attempt_at, d.pos
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE tracker.sink_deliveries d
SET claimed_until = now() + make_interval(secs => $3::float8), claim = $4
FROM due
WHERE d.sink = $1 AND d.event_id = due.event_id
RETURNING d.event_id, d.body, d.attempts, d.recorded_at
"""

# Results of attempts by claim $2: delivered rows go; others are tried again after retry_in_s
# or dead-lettered; a 410 ('gone') or a claim handed back unsent ('released') puts the row back
# without counting an attempt. Rows whose lease another claim has taken since are left to it.
# The sink's last success (at most once a second: a hot row) and last error follow.
RECORD_SINK_DELIVERIES = """
WITH r AS (
    SELECT * FROM unnest($3::bigint[], $4::text[], $5::float8[], $6::int[], $7::text[])
        AS r(event_id, outcome, retry_in_s, status, error)
), delivered AS (
    DELETE FROM tracker.sink_deliveries d USING r
    WHERE d.sink = $1 AND d.event_id = r.event_id AND d.claim = $2 AND r.outcome = 'delivered'
    RETURNING d.event_id
), tried AS (
    UPDATE tracker.sink_deliveries d SET
        attempts = d.attempts + (r.outcome NOT IN ('gone', 'released'))::int,
        status = CASE WHEN r.outcome = 'dead' THEN 'dead' ELSE 'pending' END,
        next_attempt_at = now() + make_interval(secs => r.retry_in_s),
        claim = NULL,
        claimed_until = NULL,
        first_attempt_at = CASE WHEN r.outcome = 'released' THEN d.first_attempt_at
                                ELSE coalesce(d.first_attempt_at, now()) END,
        last_attempt_at = CASE WHEN r.outcome = 'released' THEN d.last_attempt_at ELSE now() END,
        last_status = CASE WHEN r.outcome = 'released' THEN d.last_status ELSE r.status END,
        last_error = CASE WHEN r.outcome = 'released' THEN d.last_error ELSE r.error END,
        dead_at = CASE WHEN r.outcome = 'dead' THEN now() END
    FROM r
    WHERE d.sink = $1 AND d.event_id = r.event_id AND d.claim = $2 AND r.outcome <> 'delivered'
    RETURNING d.event_id
)
UPDATE tracker.sinks s SET
    last_success_at = CASE WHEN EXISTS (SELECT FROM r WHERE outcome = 'delivered') THEN now()
                           ELSE s.last_success_at END,
    last_error = coalesce((SELECT error FROM r WHERE error IS NOT NULL ORDER BY event_id DESC LIMIT 1),
                          s.last_error),
    last_error_at = CASE WHEN EXISTS (SELECT FROM r WHERE error IS NOT NULL) THEN now()
                         ELSE s.last_error_at END
WHERE s.name = $1
  AND (EXISTS (SELECT FROM r WHERE error IS NOT NULL)
       OR s.last_success_at IS NULL OR s.last_success_at < now() - interval '1 second')
"""  # the data-modifying CTEs run to completion whether or not the sink's row is updated

# Seconds until the sink's next pending delivery comes due (NULL: none pending).
NEXT_SINK_DUE = """
SELECT extract(epoch FROM min(greatest(next_attempt_at, claimed_until)) - now())::float8
FROM tracker.sink_deliveries WHERE sink = $1 AND status = 'pending'
"""

DISABLE_SINK = """
UPDATE tracker.sinks SET disabled_at = coalesce(disabled_at, now()), disabled_reason = $2
WHERE name = $1
"""

ENABLE_SINK = """
UPDATE tracker.sinks SET disabled_at = NULL, disabled_reason = NULL, paused_until = NULL
WHERE name = $1 RETURNING name
"""

# ... and what waited for a retry or a receiver's Retry-After is due now (an operator resumes it).
RESUME_DELIVERIES = """
UPDATE tracker.sink_deliveries SET next_attempt_at = now()
WHERE sink = $1 AND status = 'pending' AND next_attempt_at > now()
"""

# $2 seconds: the sink waits at least this long (a later pause already set stands).
PAUSE_SINK = """
UPDATE tracker.sinks
SET paused_until = greatest(paused_until, now() + make_interval(secs => $2::float8))
WHERE name = $1
"""

SINK_SUCCEEDED = "UPDATE tracker.sinks SET last_success_at = now() WHERE name = $1"

SINK_FAILED = "UPDATE tracker.sinks SET last_error = $2, last_error_at = now() WHERE name = $1"

# A NATS sink's stream that acknowledged its events (sql/027): read when it connects, written
# at its first acknowledgement in a daemon's life.
SINK_ACKED_STREAM = "SELECT acked_stream FROM tracker.sinks WHERE name = $1"
SET_SINK_ACKED_STREAM = """
UPDATE tracker.sinks SET acked_stream = $2 WHERE name = $1 AND acked_stream IS DISTINCT FROM $2
"""

# Dead letters of sink $1 (events recorded at or after $2, if given) become pending again.
REDRIVE_SINK = """
UPDATE tracker.sink_deliveries
SET status = 'pending', attempts = 0, next_attempt_at = now(), claim = NULL, claimed_until = NULL,
    dead_at = NULL
WHERE sink = $1 AND status = 'dead' AND ($2::timestamptz IS NULL OR recorded_at >= $2)
"""

SINK_STATUS = "SELECT * FROM tracker.sink_status ORDER BY sink"
# What the lag gauges read every 10 s: without dead_letters, whose count (sql/029) is left out.
SINK_LAG = "SELECT sink, events_behind, disabled FROM tracker.sink_status ORDER BY sink"

WAKE_SINKS = "SELECT pg_notify('tracker_events', 'redrive')"

# `tracker sinks forget`, in one transaction: the sink's row locked (a daemon's SEE_SINKS waits
# from now on), the daemons seen running it within $2 seconds (then nothing is deleted), and the
# sink taken out of the configuration: its row, its pending deliveries, dead letters and runners
# (cascade), and its cursor, which would otherwise hold back retention of the outbox for ever.
LOCK_SINK = SINK_KIND + " FOR UPDATE"

# Also a webhook sink's live reader lease: a daemon of an older release writes no runner row
# but holds that lease while it reads (one of this release drops it when it stops).
SINK_RUNNING = """
SELECT runner, greatest(extract(epoch FROM now() - seen_at), 0)::float8 AS seen_s_ago
FROM tracker.sink_runners
WHERE sink = $1 AND seen_at > now() - make_interval(secs => $2::float8)
UNION ALL
SELECT 'the daemon holding its reader lease (' || reader || ')', 0
FROM tracker.sinks WHERE name = $1 AND reader_until > now()
ORDER BY seen_s_ago
"""

FORGET_SINK = """
WITH s AS (DELETE FROM tracker.sinks WHERE name = $1 RETURNING consumer),
     c AS (DELETE FROM tracker.consumers WHERE consumer IN (SELECT consumer FROM s) RETURNING 1)
SELECT (SELECT count(*) FROM s) AS sinks, (SELECT count(*) FROM c) AS cursors
"""
