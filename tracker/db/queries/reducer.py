"""The reducer's statements (tracker.db.reducer): reports stored, messages locked, transitions and
states written; the publisher's."""

# --- reducer -----------------------------------------------------------------------------------

# Batches of rows travel as one JSON array of arrays (tracker.db.rows.rows_json), unpacked here by
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
    SELECT id, state, submitted_at FROM tracker.messages
    WHERE id = ANY (ARRAY(SELECT message_id FROM stored WHERE message_id IS NOT NULL))
    ORDER BY id
    FOR NO KEY UPDATE
)"""
_REPORTS_AND_STATES = _LOCKED + """
SELECT stored.*, locked.state AS current_state, locked.submitted_at
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
    -- One index probe per report. OFFSET 0 keeps the planner from turning this into a hash
    -- join over every message, as it did for small batches on a small table (it reckons on
    -- 100 rows from any jsonb_array_elements(): tests/integration/test_report_plan.py).
    LEFT JOIN LATERAL (
        SELECT id FROM tracker.messages m
        WHERE m.vendor = o.vendor AND m.vendor_ref = o.vendor_ref AND m.recipient_key = o.recipient_key
        OFFSET 0
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
SELECT claimed.id AS claimed_id, stored.*, locked.state AS current_state, locked.submitted_at
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
      AND o.received_at > timestamptz '2000-01-01'  -- the predicate of its index (sql/034)
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
# - delivered_at: the earliest delivery time any report gave (row field occurred_at: the earliest
#   of the batch's `delivered` and `read` reports, core.reduce.delivery_times), kept by min as
#   states are by max, so that it depends neither on batching nor on the reports' order; a
#   `delivered` arriving after `read` changes no state but may bring the delivery time earlier;
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
    delivered_at = CASE WHEN coalesce(u.state, m.state) >= 'delivered'
                        THEN least(m.delivered_at, u.occurred_at) ELSE m.delivered_at END,
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
# publishes, committed with its WAL flush (sql/022: positions a reader saw are never lost). The
# comment names the row it waits for (pg_stat_activity shows it).
PUBLISH_WAITING = "SELECT tracker.publish_waiting($1, 2000) /* waits for event_publisher FOR UPDATE */"
