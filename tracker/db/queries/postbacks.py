"""Raw postbacks (tracker.postbacks, sql/004_postbacks.sql): the group commit, the appliers'
claims, replay."""

# --- postbacks (tracker.postbacks, sql/004_postbacks.sql) ----------------------------------------

# One group commit: ids drawn from the sequence ahead (a block at a time, so that each caller
# knows its row's id for sure), then every raw postback of the batch in one statement (for a
# small batch, in the transaction that applies them).
NEXT_POSTBACK_IDS = """
SELECT array_agg(nextval('tracker.postbacks_id_seq')) FROM generate_series(1, $1)
"""

# The group commit writes its batch by binary COPY into these columns (tracker.postbacks.commit),
# with processed_at when the same transaction applies them; INSERT_POSTBACKS is the same as one
# statement, unprocessed.
POSTBACK_COLUMNS = ("id", "vendor", "method", "content_type", "query", "body", "source", "received_at")
APPLIED_POSTBACK_COLUMNS = (*POSTBACK_COLUMNS, "processed_at")

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

# $1 vendor, $2 since, $3 before (None: no bound).
COUNT_REPLAY_POSTBACKS = """
SELECT count(*) FROM tracker.postbacks
WHERE ($1::text IS NULL OR vendor = $1) AND ($2::timestamptz IS NULL OR received_at >= $2)
  AND ($3::timestamptz IS NULL OR received_at < $3)
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
