"""The poller's statements (tracker.poller, sql/005_polling.sql): claims, write-backs, poll stats,
shared rate limits and concurrency slots."""

# --- poller (tracker/poller/engine.py, sql/005_polling.sql) -----------------------------------
#
# A claim leases due messages to one poller: lease_owner/lease_until say who holds them; a
# message is due when next_poll_at has come and it is not leased (or its lease has run out, so
# that a crashed poller's claims come due again by themselves). A claim changes no indexed
# column (a HOT update: cheap); the write-back sets the next poll. FOR NO KEY UPDATE (not FOR
# UPDATE) so that the key-share locks of concurrent observation inserts (FK checks) do not make
# SKIP LOCKED pass over a message.
#
# `next_poll_at <= (SELECT now())`, not `<= now()`: the planner cannot read a sub-select's value,
# so it never trusts statistics about how many messages are due. Those always lag (next polls
# keep moving forward), and when they said few, it fetched and sorted every due message to take
# the first 200: O(backlog) per claim after an outage or a campaign's first polls (15 ms for
# 20,000 due) instead of an index scan that stops at the claim's size (2 ms).

# $1 vendor, $2 how many, $3 owner, $4 lease seconds.
CLAIM_DUE = """
WITH due AS MATERIALIZED (
    SELECT id FROM tracker.messages
    WHERE vendor = $1 AND next_poll_at <= (SELECT now())
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
        WHERE vendor = $1 AND next_poll_at <= (SELECT now())
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
# now(): the time the write-back dates its reports and next polls by, the database's (as the claim
# judges them due by): a daemon's clock an hour behind wrote next polls already due, and polled
# the same messages in a loop while new ones starved.
HOLD_CLAIMED = """
SELECT id, state, now(), submitted_at FROM tracker.messages
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

# In-flight messages of vendors that poll ($1) left with no next poll: taken in by a replica of
# an earlier release with the vendor disabled in its configuration (its intake gave them none).
# Through the in-flight index; a vendor that polls never leaves one so otherwise.
POLL_LEFT_UNPOLLED = """
UPDATE tracker.messages SET next_poll_at = now()
WHERE state < 'unknown' AND next_poll_at IS NULL AND vendor = ANY($1::text[])
"""

# Tracking windows that ended on messages not final yet. $1 how many. A message of a polled
# vendor never looked up yet is asked first, for up to a day more: a backlog taken in
# with its senders' times, its windows already over, was `unknown` before any status call went
# out (400 of 500 delivered messages, at 20 polls a second). A vendor down for good still ends them.
# With each, the message's last report when that was one we could not map (its code and words),
# to be said with the `unknown`: "undelivered, 30022" is what the operator needs to see there.
WINDOW_ENDED = """
SELECT m.id, m.vendor, m.vendor_ref, m.recipient,
       last.code AS unmapped_code, last.text AS unmapped_text
FROM tracker.messages m
LEFT JOIN LATERAL (SELECT o.state, o.code, o.text FROM tracker.observations o
                   WHERE o.message_id = m.id ORDER BY o.id DESC LIMIT 1) last
       ON last.state IS NULL
WHERE m.state < 'unknown' AND m.window_ends_at <= now()
  AND (m.poll_count > 0 OR m.next_poll_at IS NULL OR m.window_ends_at <= now() - interval '1 day')
ORDER BY m.window_ends_at
LIMIT $1
FOR NO KEY UPDATE OF m SKIP LOCKED
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

# The deployment's concurrency per vendor: slots held under a lease (tracker.poller.slot_leases,
# sql/016_vendor_slots.sql). One statement per flush, for every vendor this replica polls:
# - its target: the vendor's concurrency split among the replicas polling it now (poll_stats
#   rows refreshed in the last 15 s, this one included), the remainder to the first by name
#   (shared_limits.fair_target);
# - the slots it holds are renewed, up to its target, or more while it may be using them (the
#   need: slots in use, or its limit before this flush); the rest are given back (highest
#   first), so a slot is given back only at the flush after the limit went below it;
# - free slots, or slots whose lease ended, are taken up to the target: an insert that, on
#   conflict, takes the row only if it is still free (rechecked on the row as it is now), so
#   two replicas never hold one slot.
# $1 replica, then per vendor: $2 name, $3 concurrency, $4 need, $5 lease seconds.
# Returns per vendor: target, replicas, held (renewed + taken), given (given back).
HOLD_SLOTS = """
WITH asked AS (
    SELECT * FROM unnest($2::text[], $3::int[], $4::int[], $5::float8[])
        AS a(vendor, concurrency, need, lease_s)
), polling AS (
    SELECT vendor, replica FROM tracker.poll_stats
    WHERE vendor = ANY ($2::text[]) AND stopped_at IS NULL
      AND updated_at > now() - interval '15 seconds'
    UNION
    SELECT vendor, $1 FROM asked
), ranked AS (
    SELECT vendor, replica, count(*) OVER w AS replicas,
           row_number() OVER (w ORDER BY replica) - 1 AS rank
    FROM polling
    WINDOW w AS (PARTITION BY vendor)
), goal AS (
    SELECT a.*, r.replicas::int AS replicas,
           (a.concurrency / r.replicas + (r.rank < a.concurrency % r.replicas)::int)::int AS target
    FROM asked a JOIN ranked r ON r.vendor = a.vendor AND r.replica = $1
), mine AS (
    SELECT s.vendor, s.slot, row_number() OVER (PARTITION BY s.vendor ORDER BY s.slot) AS n
    FROM tracker.vendor_slots s
    WHERE s.vendor = ANY ($2::text[]) AND s.replica = $1
), keep AS (
    SELECT m.vendor, m.slot, g.lease_s,
           m.slot < g.concurrency AND m.n <= greatest(g.target, g.need) AS kept
    FROM mine m JOIN goal g ON g.vendor = m.vendor
), renewed AS (
    UPDATE tracker.vendor_slots s SET lease_until = now() + make_interval(secs => k.lease_s)
    FROM keep k
    WHERE k.kept AND s.vendor = k.vendor AND s.slot = k.slot AND s.replica = $1
    RETURNING s.vendor
), given AS (
    UPDATE tracker.vendor_slots s SET replica = NULL, lease_until = NULL
    FROM keep k
    WHERE NOT k.kept AND s.vendor = k.vendor AND s.slot = k.slot AND s.replica = $1
    RETURNING s.vendor
), free AS (
    SELECT g.vendor, x.slot, g.lease_s,
           row_number() OVER (PARTITION BY g.vendor ORDER BY x.slot) AS n,
           g.target - (SELECT count(*) FROM keep k WHERE k.vendor = g.vendor AND k.kept) AS wanted
    FROM goal g CROSS JOIN generate_series(0, g.concurrency - 1) AS x(slot)
    WHERE NOT EXISTS (SELECT 1 FROM tracker.vendor_slots s
                      WHERE s.vendor = g.vendor AND s.slot = x.slot
                        AND (s.replica = $1 OR s.lease_until >= now()))
), taken AS (
    INSERT INTO tracker.vendor_slots AS s (vendor, slot, replica, lease_until)
    SELECT vendor, slot, $1, now() + make_interval(secs => lease_s) FROM free
    WHERE n <= wanted
    ORDER BY vendor, slot
    ON CONFLICT (vendor, slot) DO UPDATE
        SET replica = excluded.replica, lease_until = excluded.lease_until
        WHERE s.replica IS NULL OR s.lease_until < now()
    RETURNING s.vendor
)
SELECT g.vendor, g.target, g.replicas,
       ((SELECT count(*) FROM renewed r WHERE r.vendor = g.vendor)
        + (SELECT count(*) FROM taken t WHERE t.vendor = g.vendor))::int AS held,
       (SELECT count(*) FROM given x WHERE x.vendor = g.vendor)::int AS given
FROM goal g
"""

# A poller that stops gives its slots back. $1 replica.
RELEASE_SLOTS = "UPDATE tracker.vendor_slots SET replica = NULL, lease_until = NULL WHERE replica = $1"

# A poller that stops cleanly says so: its circuit state no longer counts in vendor_health.
STOP_POLL_STATS = "UPDATE tracker.poll_stats SET stopped_at = now() WHERE replica = $1"
