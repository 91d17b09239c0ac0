"""Every SQL statement the daemon runs (migrations, views and SQL functions live in sql/)."""

# --- reducer -----------------------------------------------------------------------------------

# Batches of rows travel as one JSON array of arrays (reducer.rows_json), unpacked here by
# position: one parameter instead of one array per column (cheaper to encode and to decode).
# An observation row: 0 vendor, 1 vendor_ref, 2 recipient_key, 3 state, 4 code, 5 text,
# 6 event_at, 7-9 failure code, reason, permanent, 10 raw; then per statement.

# The end of each statement that stores reports (their CTE `stored`): the messages they are
# about, locked in id order (so that concurrent batches never deadlock) in the same statement, a
# round trip less; each report comes back with its message's state under that lock
# (current_state), which the reducer plans against. FOR NO KEY UPDATE, not FOR UPDATE: that
# would wait on the FK checks of concurrent inserts.
_LOCKED = """,
locked AS MATERIALIZED (
    SELECT id, state FROM tracker.messages
    WHERE id = ANY (ARRAY(SELECT message_id FROM stored WHERE message_id IS NOT NULL))
    ORDER BY id
    FOR NO KEY UPDATE
)"""
_REPORTS_AND_STATES = _LOCKED + """
SELECT stored.*, locked.state AS current_state
FROM stored LEFT JOIN locked ON locked.id = stored.message_id
ORDER BY stored.id
"""

# Rows: an observation row + 11 received_at, 12 postback_id, 13 operator. $2 source. Each
# report is attached to its message, found by key (none yet: an orphan, adopted later).
_STORE_GIVEN = """o AS (
    SELECT r->>0 AS vendor, r->>1 AS vendor_ref, r->>2 AS recipient_key,
           (r->>3)::tracker.state AS state, r->>4 AS code, r->>5 AS text,
           (r->>6)::timestamptz AS event_at, r->>7 AS failure_code, r->>8 AS failure_reason,
           (r->>9)::boolean AS failure_permanent, nullif(r->10, 'null') AS raw,
           (r->>11)::timestamptz AS received_at, (r->>12)::bigint AS postback_id,
           r->>13 AS operator
    FROM jsonb_array_elements($1::jsonb) AS rows(r)
), stored AS (
    INSERT INTO tracker.observations (
        message_id, vendor, vendor_ref, recipient_key, source, state, code, text, event_at,
        received_at, failure_code, failure_reason, failure_permanent, raw, postback_id, operator)
    SELECT m.id, o.vendor, o.vendor_ref, o.recipient_key, $2::tracker.source, o.state, o.code,
           o.text, o.event_at, o.received_at, o.failure_code, o.failure_reason,
           o.failure_permanent, o.raw, o.postback_id, o.operator
    FROM o
    LEFT JOIN LATERAL (  -- one index probe per report, whatever the plan's row estimates
        SELECT id FROM tracker.messages m
        WHERE m.vendor = o.vendor AND m.vendor_ref = o.vendor_ref AND m.recipient_key = o.recipient_key
    ) m ON true
    {only}
    RETURNING id, message_id, vendor, code, state, source,
              coalesce(event_at, received_at) AS occurred_at, received_at, failure_code,
              failure_reason, failure_permanent, operator, postback_id
)"""
INSERT_OBSERVATIONS = "WITH " + _STORE_GIVEN.format(only="") + _REPORTS_AND_STATES

# Postbacks just stored ($3: their ids), claimed and applied in one statement: each row is
# marked processed (the claim; the transaction rolls it back if applying fails) unless another
# session holds it or did it (a sweep, a replay: left to it), and only the claimed rows' reports
# are stored. A row per claimed postback (claimed_id), one per report it stored.
CLAIM_AND_INSERT_OBSERVATIONS = """
WITH claimed AS (
    UPDATE tracker.postbacks p SET processed_at = now()
    FROM (SELECT id FROM tracker.postbacks
          WHERE id = ANY($3::bigint[]) AND processed_at IS NULL
          ORDER BY id
          FOR UPDATE SKIP LOCKED) c
    WHERE p.id = c.id
    RETURNING p.id
), """ + _STORE_GIVEN.format(only="WHERE o.postback_id = ANY (ARRAY(SELECT id FROM claimed))") + _LOCKED + """
SELECT claimed.id AS claimed_id, stored.*, locked.state AS current_state
FROM claimed
LEFT JOIN stored ON stored.postback_id = claimed.id
LEFT JOIN locked ON locked.id = stored.message_id
ORDER BY claimed.id, stored.id
"""

# Reports waiting for their message: attach them to it. Three ways to find them, each by an
# index: the reports of some messages (intake's new messages: by key), some reports (postbacks
# just stored), or the recent ones (the periodic sweep: old orphans, such as Skycore's reports
# of messages never sent through us, are not looked at again and again). The reports are
# locked in id order, so that adoptions running at once never deadlock; one that finds a
# report adopted meanwhile leaves it. Each ends with ADOPT_WAITING.
ADOPT_ORPHANS_OF_MESSAGES = """
WITH m AS MATERIALIZED (
    SELECT id, vendor, vendor_ref, recipient_key FROM tracker.messages WHERE id = ANY($1::bigint[])
), found AS MATERIALIZED (
    -- One index probe per message (OFFSET 0 keeps the planner from hashing every orphan).
    SELECT o.id, m.id AS message_id
    FROM m CROSS JOIN LATERAL (
        SELECT o.id FROM tracker.observations o
        WHERE o.vendor = m.vendor AND o.vendor_ref = m.vendor_ref
          AND o.recipient_key = m.recipient_key AND o.message_id IS NULL
        OFFSET 0) o
), waiting AS MATERIALIZED (
    SELECT o.id, f.message_id
    FROM found f JOIN tracker.observations o ON o.id = f.id
    WHERE o.id = ANY (ARRAY(SELECT id FROM found))  -- by primary key, never a scan
      AND o.message_id IS NULL
    ORDER BY o.id
    FOR UPDATE OF o
)"""

ADOPT_ORPHAN_REPORTS = """
WITH waiting AS MATERIALIZED (
    SELECT o.id, m.id AS message_id
    FROM tracker.observations o
    JOIN tracker.messages m
      ON m.vendor = o.vendor AND m.vendor_ref = o.vendor_ref AND m.recipient_key = o.recipient_key
    WHERE o.message_id IS NULL AND o.id = ANY($1::bigint[])
    ORDER BY o.id
    FOR UPDATE OF o
)"""

# $1: how far back to look, in seconds (NULL: every orphan, however old).
ADOPT_RECENT_ORPHANS = """
WITH waiting AS MATERIALIZED (
    SELECT o.id, m.id AS message_id
    FROM tracker.observations o
    JOIN tracker.messages m
      ON m.vendor = o.vendor AND m.vendor_ref = o.vendor_ref AND m.recipient_key = o.recipient_key
    WHERE o.message_id IS NULL
      AND ($1::float8 IS NULL OR o.received_at > now() - make_interval(secs => $1::float8))
    ORDER BY o.id
    FOR UPDATE OF o
)"""

ADOPT_WAITING = """, stored AS (
    UPDATE tracker.observations o SET message_id = w.message_id
    FROM waiting w
    WHERE o.id = w.id
    RETURNING o.id, o.message_id, o.vendor, o.code, o.state, o.source,
              coalesce(o.event_at, o.received_at) AS occurred_at, o.received_at,
              o.failure_code, o.failure_reason, o.failure_permanent, o.operator, o.postback_id
)""" + _REPORTS_AND_STATES

# Rows: tracker.db.rows.TransitionRow, by position (intake's first states; every later
# transition is written with its message, by WRITE_MESSAGES).
_INSERT_TRANSITIONS_FROM = """
INSERT INTO tracker.transitions (
    message_id, from_state, to_state, source, occurred_at, failure_code, failure_reason,
    failure_permanent, is_correction, observation_id)
SELECT (r->>0)::bigint AS message_id, (r->>1)::tracker.state AS from_state,
       (r->>2)::tracker.state AS to_state, (r->>3)::tracker.source AS source,
       (r->>4)::timestamptz AS occurred_at, r->>5 AS failure_code, r->>6 AS failure_reason,
       (r->>7)::boolean AS failure_permanent, (r->>8)::boolean AS is_correction,
       (r->>9)::bigint AS observation_id
FROM jsonb_array_elements({rows}::jsonb) AS rows(r)
"""
INSERT_TRANSITIONS = _INSERT_TRANSITIONS_FROM.format(rows="$1")

# The one way a message's state is written, for every source (reducer.apply for postbacks, the
# tracker's window sweep and adopted orphans; reducer.apply_polls for the poller; intake for the
# operators of the messages it made): the messages' rows and the transitions that got them
# there, with the writers' NOTIFY when there are any, in one statement (one round trip; the
# notification is sent at commit). $1 rows: tracker.db.rows.MessageWrite, by position; $2 the
# ids again (an index scan even on a small table); $3 transitions: TransitionRow (may be none).
# The rules, in one place:
# - state: the planned new one, else unchanged; updated_at moves with it;
# - delivered_at: set once, when the state first reaches delivered (or read);
# - failure details follow the state: set by a failure, cleared by a success;
# - last_report_at: the latest report received (greatest() skips NULLs);
# - operator: the latest report naming one wins; a report older than the message's last one
#   (an orphan adopted late) names it only where none is known yet;
# - next_poll_at: cleared by a final state; otherwise unchanged, unless the poller hands its
#   claim back (a row with next_poll_at): then that time, or a later one a postback set
#   meanwhile (tracker.postbacks pushes polls out); poll_count counts the poll, and the lease
#   is let go.
WRITE_MESSAGES = """
WITH transitions AS (""" + _INSERT_TRANSITIONS_FROM.format(rows="$3") + """RETURNING 1
), messages AS (
UPDATE tracker.messages m SET
    state = coalesce(u.state, m.state),
    updated_at = CASE WHEN u.state IS NULL THEN m.updated_at ELSE now() END,
    delivered_at = CASE WHEN u.state >= 'delivered' THEN coalesce(m.delivered_at, u.occurred_at)
                        ELSE m.delivered_at END,
    failure_code = CASE WHEN u.state IS NULL THEN m.failure_code
                        WHEN u.state < 'delivered' THEN u.failure_code END,
    failure_reason = CASE WHEN u.state IS NULL THEN m.failure_reason
                          WHEN u.state < 'delivered' THEN u.failure_reason END,
    failure_permanent = CASE WHEN u.state IS NULL THEN m.failure_permanent
                             WHEN u.state < 'delivered' THEN u.failure_permanent END,
    last_report_at = greatest(m.last_report_at, u.reported_at),
    operator = CASE WHEN u.operator IS NOT NULL
                         AND (m.operator IS NULL OR m.last_report_at IS NULL
                              OR u.operator_at >= m.last_report_at)
                    THEN u.operator ELSE m.operator END,
    next_poll_at = CASE
        WHEN coalesce(u.state, m.state) >= 'unknown' OR m.next_poll_at IS NULL THEN NULL
        WHEN u.next_poll_at IS NULL THEN m.next_poll_at
        WHEN m.next_poll_at > now() THEN greatest(m.next_poll_at, u.next_poll_at)
        ELSE u.next_poll_at END,
    poll_count = m.poll_count + u.polls,
    lease_owner = CASE WHEN u.next_poll_at IS NULL THEN m.lease_owner END,
    lease_until = CASE WHEN u.next_poll_at IS NULL THEN m.lease_until END
FROM (
    SELECT (r->>0)::bigint AS id, (r->>1)::tracker.state AS state,
           (r->>2)::timestamptz AS occurred_at, r->>3 AS failure_code, r->>4 AS failure_reason,
           (r->>5)::boolean AS failure_permanent, (r->>6)::timestamptz AS reported_at,
           r->>7 AS operator, (r->>8)::timestamptz AS operator_at,
           (r->>9)::timestamptz AS next_poll_at, (r->>10)::integer AS polls
    FROM jsonb_array_elements($1::jsonb) AS rows(r)
) u
WHERE m.id = ANY($2::bigint[]) AND m.id = u.id
)
SELECT pg_notify('tracker_transitions', n::text) FROM (SELECT count(*) AS n FROM transitions) c
WHERE n > 0
"""

# Writers say they committed transitions; the publisher (tracker.events) numbers them, and
# tracker.publish_events() notifies `tracker_events` for consumers (sql/010_publish_notify.sql).
NOTIFY_EVENTS = "SELECT pg_notify('tracker_transitions', $1::text)"

# The daemon's publisher: one statement that waits for the publisher row (2 s at most) and
# publishes, committing without waiting for the WAL flush (sql/013_publish_waiting.sql says why
# that is safe). The comment names the row it waits for (pg_stat_activity shows it).
PUBLISH_WAITING = "SELECT tracker.publish_waiting($1, 2000) /* waits for event_publisher FOR UPDATE */"

# --- intake (tracker.intake, docs/intake.md) -------------------------------------------------

# Claim new rows, oldest first, up to $1 rows and about $2 bytes of stored response + request
# (so that a batch of large rows stays small in memory); rows another intake holds are passed
# over. A row's first look is free of decoding traps: a submitted_at outside the sane range
# arrives as NULL (its text beside it), a response larger than $3 bytes stored is not fetched.
CLAIM_SUBMISSIONS = """
WITH candidates AS MATERIALIZED (
    SELECT id, coalesce(pg_column_size(response), 0) + coalesce(pg_column_size(request), 0) AS size
    FROM tracker.submissions
    WHERE processed_at IS NULL
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM (SELECT id, sum(size) OVER (ORDER BY id) - size AS before FROM candidates) c
    WHERE before < $2
)
SELECT s.id, s.vendor, s.client_ref, s.vendor_ref, s.recipient,
       CASE WHEN s.submitted_at >= '2000-01-01' AND s.submitted_at < now() + interval '1 day'
            THEN s.submitted_at END AS submitted_at,
       s.submitted_at::text AS submitted_text,
       CASE WHEN pg_column_size(s.response) <= $3 THEN s.response END AS response,
       CASE WHEN pg_column_size(s.request) <= $3 THEN s.request END AS request,
       CASE WHEN greatest(pg_column_size(s.response), pg_column_size(s.request)) > $3
            THEN greatest(pg_column_size(s.response), pg_column_size(s.request)) END
           AS response_too_large,
       $3 AS response_limit
FROM tracker.submissions s
WHERE s.id IN (SELECT id FROM picked)
ORDER BY s.id
"""

# New messages, in the state their submit reports raise them to (tracker.intake.plan); a key
# that exists already is left alone (its reports go through the reducer). Each new message says
# whether reports are waiting for it (orphans: adopted by the caller). Rows: 0 vendor,
# 1 vendor_ref, 2 recipient_key, 3 issued_ref (NULL: as vendor_ref), 4 recipient, 5 client_ref,
# 6 submission_id, 7 submitted_at, 8 vendor_deadline, 9 window_ends_at, 10 next_poll_at,
# 11 state, 12 delivered_at, 13-15 failure code, reason, permanent, 16 last_report_at,
# 17 country, 18 calling_code.
INSERT_NEW_MESSAGES = """
WITH new AS (
    INSERT INTO tracker.messages (
        vendor, vendor_ref, recipient_key, issued_ref, recipient, client_ref, submission_id,
        submitted_at, vendor_deadline, window_ends_at, next_poll_at, state, delivered_at,
        failure_code, failure_reason, failure_permanent, last_report_at, country, calling_code)
    SELECT r->>0, r->>1, r->>2, r->>3, r->>4, r->>5, (r->>6)::bigint, (r->>7)::timestamptz,
           (r->>8)::timestamptz, (r->>9)::timestamptz, (r->>10)::timestamptz,
           (r->>11)::tracker.state, (r->>12)::timestamptz, r->>13, r->>14, (r->>15)::boolean,
           (r->>16)::timestamptz, r->>17, (r->>18)::integer
    FROM jsonb_array_elements($1::jsonb) AS rows(r)
    ON CONFLICT (vendor, vendor_ref, recipient_key) DO NOTHING
    RETURNING id, vendor, vendor_ref, recipient_key
)
SELECT new.id, new.vendor, new.vendor_ref, new.recipient_key,
       EXISTS (SELECT 1 FROM tracker.observations o
               WHERE o.vendor = new.vendor AND o.vendor_ref = new.vendor_ref
                 AND o.recipient_key = new.recipient_key AND o.message_id IS NULL) AS orphans
FROM new
"""

# Every claimed row's outcome: $1 ids, $2 message counts; then, for the few rows refused or
# taken with a note, FINISH_SUBMISSION_PROBLEMS ($1 ids, $2 errors, $3 notes).
FINISH_SUBMISSIONS = """
UPDATE tracker.submissions s SET processed_at = now(), waiting = NULL, message_count = u.n
FROM unnest($1::bigint[], $2::integer[]) AS u(id, n)
WHERE s.id = ANY($1::bigint[]) AND s.id = u.id
"""

FINISH_SUBMISSION_PROBLEMS = """
UPDATE tracker.submissions s SET error = u.error, note = u.note
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(id, error, note)
WHERE s.id = ANY($1::bigint[]) AND s.id = u.id
"""

UPSERT_VENDOR_SETTINGS = """
INSERT INTO tracker.vendor_settings (vendor, expected_final_s)
SELECT * FROM unnest($1::text[], $2::float8[])
ON CONFLICT (vendor) DO UPDATE SET expected_final_s = excluded.expected_final_s, updated_at = now()
"""

# --- poller (tracker/poller/engine.py, sql/005_polling.sql) -----------------------------------
#
# A claim leases due messages to one poller: lease_owner/lease_until say who holds them; a
# message is due when next_poll_at has come and it is not leased (or its lease has run out, so
# that a crashed poller's claims come due again by themselves). A claim changes no indexed
# column (a HOT update: cheap); the write-back sets the next poll. FOR NO KEY UPDATE (not FOR
# UPDATE) so that the key-share locks of concurrent observation inserts (FK checks) do not make
# SKIP LOCKED pass over a message.

# $1 vendor, $2 how many, $3 owner, $4 lease seconds.
CLAIM_DUE = """
WITH due AS MATERIALIZED (
    SELECT id FROM tracker.messages
    WHERE vendor = $1 AND next_poll_at <= now()
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY next_poll_at
    LIMIT $2
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE tracker.messages m
SET lease_owner = $3,
    lease_until = now() + make_interval(secs => $4)
WHERE m.id = ANY (ARRAY(SELECT id FROM due))  -- by primary key, never a scan of the table
RETURNING m.id, m.vendor_ref, m.recipient, m.recipient_key, m.poll_count, m.submitted_at,
          m.window_ends_at, m.lease_until, coalesce(m.issued_ref, m.vendor_ref) AS issued_ref,
          m.vendor_deadline
"""

# Vendors whose one call answers a whole batch id (Sparrow): claim every polled, unleased
# message of each batch that has a due message, so one pair of report calls answers them all.
# A batch is taken by one claimer at a time (a transaction-scoped advisory lock per batch id;
# a claimer that cannot have it leaves the batch to the one that has), so that two claimers
# never split one batch between them.
# $1 vendor, $2 how many due messages to start from, $3 owner, $4 lease seconds.
CLAIM_DUE_BATCHES = """
WITH due AS MATERIALIZED (
    SELECT DISTINCT vendor_ref FROM (
        SELECT vendor_ref FROM tracker.messages
        WHERE vendor = $1 AND next_poll_at <= now()
          AND (lease_until IS NULL OR lease_until < now())
        ORDER BY next_poll_at
        LIMIT $2
    ) d
), mine AS MATERIALIZED (
    SELECT vendor_ref FROM due
    WHERE pg_try_advisory_xact_lock(hashtext('tracker.poll.' || $1), hashtext(vendor_ref))
), members AS MATERIALIZED (
    SELECT m.id FROM tracker.messages m
    WHERE m.vendor = $1
      AND m.vendor_ref IN (SELECT vendor_ref FROM mine)
      AND m.next_poll_at IS NOT NULL
      AND (m.lease_until IS NULL OR m.lease_until < now())
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE tracker.messages m
SET lease_owner = $3,
    lease_until = now() + make_interval(secs => $4)
WHERE m.id = ANY (ARRAY(SELECT id FROM members))
RETURNING m.id, m.vendor_ref, m.recipient, m.recipient_key, m.poll_count, m.submitted_at,
          m.window_ends_at, m.lease_until, coalesce(m.issued_ref, m.vendor_ref) AS issued_ref,
          m.vendor_deadline
"""

# How many of a vendor's messages are due, counting no further than $2.
COUNT_DUE = """
SELECT count(*) FROM (
    SELECT 1 FROM tracker.messages
    WHERE vendor = $1 AND next_poll_at <= now() AND (lease_until IS NULL OR lease_until < now())
    LIMIT $2
) d
"""

# The earliest next poll of a vendor's unleased messages (to sleep until then).
NEXT_DUE = """
SELECT min(next_poll_at) FROM tracker.messages
WHERE vendor = $1 AND next_poll_at IS NOT NULL AND (lease_until IS NULL OR lease_until < now())
"""

# Writing results back: first lock (in id order, as the reducer does) the messages this claim
# still holds, with their states (the reducer plans against them: reducer.apply_polls); a claim
# whose lease expired and was taken over holds nothing and writes nothing.
# $1 ids, $2 owner, $3 lease_until as claimed.
HOLD_CLAIMED = """
SELECT id, state FROM tracker.messages
WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND lease_until = $3
ORDER BY id
FOR NO KEY UPDATE
"""

# The poller's write-back (reducer.apply_polls): observations of messages the poller holds
# locked, so their ids are known (no lookup by key). Rows are inserted in the order given (ORDER
# BY ord), so the ids the sequence hands out, sorted, follow that order.
# Rows: an observation row (see INSERT_OBSERVATIONS) + 11 message_id, 12 operator.
# $2 received_at (one for all), $3 source.
INSERT_POLL_OBSERVATIONS = """
INSERT INTO tracker.observations (
    message_id, vendor, vendor_ref, recipient_key, source, state, code, text, event_at,
    received_at, failure_code, failure_reason, failure_permanent, raw, operator)
SELECT (r->>11)::bigint, r->>0, r->>1, r->>2, $3::tracker.source, (r->>3)::tracker.state,
       r->>4, r->>5, (r->>6)::timestamptz, $2::timestamptz, r->>7, r->>8, (r->>9)::boolean,
       nullif(r->10, 'null'), r->>12
FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS rows(r, ord)
ORDER BY ord
RETURNING id
"""

# ... then WRITE_MESSAGES (above): one row per held message, with its release (next_poll_at).

# On shutdown: hand back every claim of this poller, due at once.
RELEASE_ALL = """
UPDATE tracker.messages
SET lease_owner = NULL, lease_until = NULL,
    next_poll_at = CASE WHEN state >= 'unknown' THEN NULL ELSE now() END
WHERE lease_owner = $1
"""

# Tracking windows that ended on messages not final yet. $1 how many.
WINDOW_ENDED = """
SELECT id, vendor, vendor_ref, recipient FROM tracker.messages
WHERE state < 'unknown' AND window_ends_at <= now()
ORDER BY window_ends_at
LIMIT $1
FOR NO KEY UPDATE SKIP LOCKED
"""

# Add one flush of a poller's counters. $1 vendors, $2 replica, then per vendor: polls ok,
# polls failed, last success, last error time, last error, circuit state, circuit since.
ADD_POLL_STATS = """
INSERT INTO tracker.poll_stats AS s (vendor, replica, polls_ok, polls_failed, last_success_at,
                                     last_error_at, last_error, circuit_state, circuit_since)
SELECT u.vendor, $2, u.ok, u.failed, u.last_success_at, u.last_error_at, u.last_error,
       u.circuit_state, u.circuit_since
FROM unnest($1::text[], $3::bigint[], $4::bigint[], $5::timestamptz[], $6::timestamptz[],
            $7::text[], $8::text[], $9::timestamptz[])
     AS u(vendor, ok, failed, last_success_at, last_error_at, last_error, circuit_state,
          circuit_since)
ON CONFLICT (vendor, replica) DO UPDATE SET
    polls_ok = s.polls_ok + excluded.polls_ok,
    polls_failed = s.polls_failed + excluded.polls_failed,
    last_success_at = greatest(s.last_success_at, excluded.last_success_at),
    last_error_at = greatest(s.last_error_at, excluded.last_error_at),
    last_error = CASE WHEN excluded.last_error_at IS NOT NULL
                      AND excluded.last_error_at >= coalesce(s.last_error_at, '-infinity')
                      THEN excluded.last_error ELSE s.last_error END,
    circuit_state = excluded.circuit_state,
    circuit_since = excluded.circuit_since,
    updated_at = now(),
    stopped_at = NULL
"""

# Vendor limits for the whole deployment (tracker.poller.shared_limits, sql/012).
# $1 vendor, $2 tokens wanted, $3 rate per second, $4 burst.
TAKE_RATE_TOKENS = "SELECT tracker.take_rate_tokens($1, $2, $3, $4)"

# Replicas polling each vendor now (their counters refreshed in the last 15 s).
POLLING_REPLICAS = """
SELECT vendor, count(*) AS replicas FROM tracker.poll_stats
WHERE stopped_at IS NULL AND updated_at > now() - interval '15 seconds'
GROUP BY vendor
"""

# A poller that stops cleanly says so: its circuit state no longer counts in vendor_health.
STOP_POLL_STATS = "UPDATE tracker.poll_stats SET stopped_at = now() WHERE replica = $1"

# --- the daemon's sweeps, replay, the demo ----------------------------------------------------

# A sweep only one replica at a time runs (Tracker.exclusive): $1 its lock's name. The lock goes
# with the transaction.
TRY_SWEEP_LOCK = "SELECT pg_try_advisory_lock(hashtext($1))"
SWEEP_UNLOCK = "SELECT pg_advisory_unlock(hashtext($1))"

POSTBACKS_TABLE_EXISTS = "SELECT to_regclass('tracker.postbacks') IS NOT NULL"

# A consumer's read and acknowledgement (the contract: tracker.read_events / ack_events).
READ_EVENTS = "SELECT * FROM tracker.read_events($1, $2)"
ACK_EVENTS = "SELECT tracker.ack_events($1, $2)"

# `tracker demo`: the sample application's sends ($1 vendor, $2 client_ref, $3 request, $4
# response), and the summary it prints at the end.
DEMO_SUBMIT = """
INSERT INTO tracker.submissions (vendor, client_ref, request, response)
VALUES ($1, $2, $3::jsonb, $4::jsonb)
"""

DEMO_SUMMARY = """
SELECT vendor, sum(total) total, sum(accepted + sent + submitted) in_flight,
       sum(delivered) delivered, sum(read) read, sum(failed) failed, sum(rejected) rejected,
       sum(expired) expired, sum(unknown) unknown
FROM tracker.delivery_summary GROUP BY 1 ORDER BY 1
"""

COUNT_INTAKE_PROBLEMS = "SELECT count(*) FROM tracker.intake_problems"

# --- migrations --------------------------------------------------------------------------------

MIGRATION_LOCK = "SELECT pg_advisory_lock(hashtext('tracker.migrate'))"
MIGRATION_UNLOCK = "SELECT pg_advisory_unlock(hashtext('tracker.migrate'))"
CREATE_MIGRATIONS_TABLE = """
CREATE SCHEMA IF NOT EXISTS tracker;
CREATE TABLE IF NOT EXISTS tracker.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
APPLIED_MIGRATIONS = "SELECT version FROM tracker.schema_migrations ORDER BY version"
RECORD_MIGRATION = "INSERT INTO tracker.schema_migrations (version, name) VALUES ($1, $2)"
MIGRATIONS_TABLE_EXISTS = "SELECT to_regclass('tracker.schema_migrations') IS NOT NULL"

# --- postbacks (tracker.postbacks, sql/004_postbacks.sql) ----------------------------------------

# One group commit: ids drawn from the sequence ahead (a block at a time, so that each caller
# knows its row's id for sure), then every raw postback of the batch in one statement (its
# own transaction).
NEXT_POSTBACK_IDS = """
SELECT array_agg(nextval('tracker.postbacks_id_seq')) FROM generate_series(1, $1)
"""

# The group commit writes its batch by binary COPY into these columns (tracker.postbacks.commit);
# INSERT_POSTBACKS is the same as one statement.
POSTBACK_COLUMNS = ("id", "vendor", "method", "content_type", "query", "body", "source", "received_at")

INSERT_POSTBACKS = """
INSERT INTO tracker.postbacks (id, vendor, method, content_type, query, body, source, received_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[],
                     $7::inet[], $8::timestamptz[])
"""

# Raw postbacks not applied yet (all, or these ids), claimed for the rest of the transaction.
CLAIM_POSTBACKS = """
SELECT id, vendor, method, content_type, query, body, received_at
FROM tracker.postbacks
WHERE processed_at IS NULL AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

# `tracker replay`: stored postbacks after an id, of one vendor and/or since a time.
REPLAY_POSTBACKS = """
SELECT id, vendor, method, content_type, query, body, received_at
FROM tracker.postbacks
WHERE id > $1
  AND ($2::text IS NULL OR vendor = $2)
  AND ($3::timestamptz IS NULL OR received_at >= $3)
ORDER BY id
LIMIT $4
FOR UPDATE
"""

COUNT_REPLAY_POSTBACKS = """
SELECT count(*) FROM tracker.postbacks
WHERE ($1::text IS NULL OR vendor = $1) AND ($2::timestamptz IS NULL OR received_at >= $2)
"""

# What these raw postbacks have produced so far (replay appends only what is new).
POSTBACK_OBSERVATIONS = """
SELECT postback_id, vendor, vendor_ref, recipient_key, state::text AS state, code, text,
       event_at, failure_code, failure_reason, failure_permanent
FROM tracker.observations
WHERE postback_id = ANY($1::bigint[])
"""

FINISH_POSTBACKS = """
UPDATE tracker.postbacks SET processed_at = coalesce(processed_at, now()), error = NULL
WHERE id = ANY($1::bigint[])
"""

MARK_POSTBACKS_UNREADABLE = """
UPDATE tracker.postbacks p SET processed_at = coalesce(p.processed_at, now()), error = u.error
FROM unnest($1::bigint[], $2::text[]) AS u(id, error)
WHERE p.id = u.id
"""

# A row that cannot be applied at all (the database refuses what it says): set aside, visible
# in tracker.postback_problems, and `tracker replay` can try it again after a fix.
FAIL_POSTBACK = """
UPDATE tracker.postbacks SET processed_at = now(), error = $2
WHERE id = $1 AND processed_at IS NULL
"""

# A postback about a message pushes its next poll further out (the vendor is pushing; polling
# stays as the backstop). Only polled, non-final messages: NULL next_poll_at means not polled.
DEFER_POLLS = """
UPDATE tracker.messages m
SET next_poll_at = greatest(m.next_poll_at, now() + make_interval(secs => u.delay_s))
FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[])
     AS u(vendor, vendor_ref, recipient_key, delay_s)
WHERE m.vendor = u.vendor AND m.vendor_ref = u.vendor_ref AND m.recipient_key = u.recipient_key
  AND m.state < 'unknown' AND m.next_poll_at IS NOT NULL
"""

# --- health (tracker.supervisor, /readyz) ------------------------------------------------------

# How long the oldest submission row not taken in yet and the oldest stored postback not applied
# yet have waited, in seconds (NULL: none waits). Two lookups in the partial indexes.
OLDEST_WAITING = """
SELECT extract(epoch FROM clock_timestamp() - (
           SELECT created_at FROM tracker.submissions WHERE processed_at IS NULL ORDER BY id LIMIT 1
       ))::float8 AS intake_s,
       extract(epoch FROM clock_timestamp() - (
           SELECT received_at FROM tracker.postbacks WHERE processed_at IS NULL ORDER BY id LIMIT 1
       ))::float8 AS postbacks_s
"""

# How many wait, each counted up to $1: bounded work however large the backlog.
COUNT_WAITING = """
SELECT (SELECT count(*) FROM (SELECT FROM tracker.submissions WHERE processed_at IS NULL LIMIT $1) s)
           AS intake,
       (SELECT count(*) FROM (SELECT FROM tracker.postbacks WHERE processed_at IS NULL LIMIT $1) p)
           AS postbacks
"""

# --- sinks (tracker.sinks, sql/008_sinks.sql, docs/events.md) -----------------------------------

# $1 names, $2 kinds ('webhook' | 'nats'). A sink's cursor is consumer 'sink:<name>'.
REGISTER_SINKS = """
INSERT INTO tracker.sinks (name, kind, consumer)
SELECT n, k, 'sink:' || n FROM unnest($1::text[], $2::text[]) AS u(n, k)
ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, configured_at = now()
"""


READ_SINK_EVENTS = "SELECT * FROM tracker.read_events($1, $2)"

ACK_SINK_EVENTS = "SELECT tracker.ack_events($1, $2)"

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
), ok AS (  -- $17: some of the batch was delivered (the sink's row: at most once a second)
    UPDATE tracker.sinks SET last_success_at = now()
    WHERE name = $1 AND $17 AND (last_success_at IS NULL OR last_success_at < now() - interval '1 second')
    RETURNING 1
)
SELECT tracker.ack_events($14, $15), (SELECT count(*) FROM ins)
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

# $2 seconds: the sink waits at least this long (a later pause already set stands).
PAUSE_SINK = """
UPDATE tracker.sinks
SET paused_until = greatest(paused_until, now() + make_interval(secs => $2::float8))
WHERE name = $1
"""

SINK_SUCCEEDED = "UPDATE tracker.sinks SET last_success_at = now() WHERE name = $1"

SINK_FAILED = "UPDATE tracker.sinks SET last_error = $2, last_error_at = now() WHERE name = $1"

# Dead letters of sink $1 (events recorded at or after $2, if given) become pending again.
REDRIVE_SINK = """
UPDATE tracker.sink_deliveries
SET status = 'pending', attempts = 0, next_attempt_at = now(), claim = NULL, claimed_until = NULL,
    dead_at = NULL
WHERE sink = $1 AND status = 'dead' AND ($2::timestamptz IS NULL OR recorded_at >= $2)
"""

SINK_STATUS = "SELECT * FROM tracker.sink_status ORDER BY sink"

WAKE_SINKS = "SELECT pg_notify('tracker_events', 'redrive')"

# A sink taken out of the configuration: its row, its pending deliveries and dead letters
# (cascade), and its cursor, which would otherwise hold back retention of the outbox for ever.
FORGET_SINK = """
WITH s AS (DELETE FROM tracker.sinks WHERE name = $1 RETURNING consumer),
     c AS (DELETE FROM tracker.consumers WHERE consumer IN (SELECT consumer FROM s) RETURNING 1)
SELECT (SELECT count(*) FROM s) AS sinks, (SELECT count(*) FROM c) AS cursors
"""

# --- status and retention (tracker.rollup, tracker.http.status, tracker.retention; sql/009) -----

# Fold the route deltas committed so far into the rollups (sql/009: tracker.fold_route_deltas).
FOLD_ROUTE_DELTAS = "SELECT tracker.fold_route_deltas()"

# Each outbox consumer (sinks are consumers 'sink:<name>'): published events not acknowledged
# yet, and how old the oldest of them is (a lookup by the unique pos index per consumer).
CONSUMER_LAG = """
SELECT c.consumer, greatest(p.last_pos - c.acked_pos, 0) AS events,
       extract(epoch FROM clock_timestamp() - (
           SELECT t.recorded_at FROM tracker.transitions t
           WHERE t.pos > c.acked_pos ORDER BY t.pos LIMIT 1))::float8 AS age_s
FROM tracker.consumers c CROSS JOIN tracker.event_publisher p
ORDER BY c.consumer
"""

# The status page reads in one read-only transaction that never runs long.
STATUS_LIMITS = "SET LOCAL statement_timeout = '3s'"

# Per vendor ($2 names, $3 expected_final_s): messages in flight (counted up to $1: an index-only
# scan of the partial index messages_in_flight), and those silent longer than the vendor is
# expected to take (tracker.stuck_messages' rule; counted up to $4: the index finds those
# submitted before then, each then read for its last report).
STATUS_IN_FLIGHT = """
SELECT v.vendor,
       (SELECT count(*) FROM (SELECT 1 FROM tracker.messages m
                              WHERE m.vendor = v.vendor AND m.state < 'unknown' LIMIT $1) f) AS in_flight,
       (SELECT count(*) FROM (SELECT 1 FROM tracker.messages m
                              WHERE m.vendor = v.vendor AND m.state < 'unknown'
                                AND m.submitted_at < now() - make_interval(secs => v.expected_final_s)
                                AND coalesce(m.last_report_at, m.submitted_at)
                                    < now() - make_interval(secs => v.expected_final_s)
                              LIMIT $4) s) AS stuck
FROM unnest($2::text[], $3::float8[]) AS v(vendor, expected_final_s)
"""

# Per vendor, messages submitted since $1 (by hour), from the rollup.
STATUS_VENDOR_FIGURES = "SELECT * FROM tracker.vendor_figures_since($1)"

# Circuit state and last successful poll (vendor_health without its unmapped-code part, which
# the planner leaves out when none of its columns is asked for).
STATUS_POLL_HEALTH = """
SELECT vendor, circuit_state, last_success_at, last_error FROM tracker.vendor_health
"""

# The distinct unmapped (vendor, code) pairs, up to $1: a skip scan of observations_unmapped,
# one index probe per pair, however many reports carry them.
STATUS_UNMAPPED_CODES = """
WITH RECURSIVE codes AS (
    (SELECT vendor, code FROM tracker.observations
     WHERE state IS NULL AND code IS NOT NULL ORDER BY vendor, code LIMIT 1)
    UNION ALL
    SELECT n.vendor, n.code FROM codes c
    CROSS JOIN LATERAL (SELECT o.vendor, o.code FROM tracker.observations o
                        WHERE o.state IS NULL AND (o.vendor, o.code) > (c.vendor, c.code)
                        ORDER BY o.vendor, o.code LIMIT 1) n
)
SELECT vendor, code FROM codes LIMIT $1
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
STATUS_RETENTION = """
SELECT DISTINCT ON (kind) kind, finished_at, removed, error
FROM tracker.retention_runs ORDER BY kind, id DESC
"""

# The sinks' view (sql/008, issue #13), where it exists.
SINK_STATUS_EXISTS = "SELECT to_regclass('tracker.sink_status') IS NOT NULL"
STATUS_SINKS = "SELECT * FROM tracker.sink_status ORDER BY 1"

# Retention (tracker.retention): one sweeper at a time (a session lock: the sweep's batches are
# transactions of their own).
RETENTION_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1))"
RETENTION_UNLOCK = "SELECT pg_advisory_unlock(hashtext($1))"

# When this kind's sweep starts, and its cutoff: $1 days ago.
RETENTION_CUTOFF = "SELECT now(), now() - make_interval(secs => $1::float8 * 86400)"

# A batch never waits long for a lock, nor runs long, nor waits for its WAL to reach the disk
# (a batch lost in a crash is removed again by the next sweep: the postbacks' commits keep the
# disk's flushes to themselves).
RETENTION_BATCH_LIMITS = """
SET LOCAL lock_timeout = '1s'; SET LOCAL statement_timeout = '30s'; SET LOCAL synchronous_commit = off
"""

# One batch of a kind (sql/009: tracker.retain_<kind>): $1 after id, $2 cutoff, $3 rows examined.
RETENTION_BATCH = {
    "orphans": "SELECT * FROM tracker.retain_orphans($1, $2, $3)",
    "postbacks": "SELECT * FROM tracker.retain_postbacks($1, $2, $3)",
    "observations": "SELECT * FROM tracker.retain_observations($1, $2, $3)",
    "transitions": "SELECT * FROM tracker.retain_transitions($1, $2, $3)",
    "final_messages": "SELECT * FROM tracker.retain_final_messages($1, $2, $3)",
    "refused_rows": "SELECT * FROM tracker.retain_refused_rows($1, $2, $3)",
}

RETENTION_RECORD_RUN = """
INSERT INTO tracker.retention_runs (kind, started_at, cutoff, removed, also, batches, error)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
"""

RETENTION_FORGET_RUNS = """
DELETE FROM tracker.retention_runs WHERE finished_at < now() - make_interval(days => $1)
"""
