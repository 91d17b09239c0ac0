"""Intake's statements (tracker.intake, docs/intake.md): submission rows claimed, messages made."""

# --- intake (tracker.intake, docs/intake.md) -------------------------------------------------

# Claim new rows, oldest first, up to $1 rows and about $2 bytes of response + request as JSON
# text (so that a batch of large rows stays small in memory); rows another intake holds are passed
# over. A batch may claim several times (tracker.intake.claims), each time past the last id
# it claimed, $4 (SKIP LOCKED passes over other transactions' rows only, not its own). A row's
# first look is free of decoding traps: a submitted_at outside the sane range arrives as NULL
# (its text beside it); a row whose response or request is longer than $3 bytes as text is not
# fetched. Sizes are of the text the daemon would receive, not pg_column_size (compressed: 200 MB
# of repeated text is stored in 2 MB); measuring renders the text in the server, never here.
# A row over $3 counts nothing against $2: it is not fetched. Only the rows whose stored sizes
# (never more than the text's, but for jsonb's few bytes of headers) fit in $2 are measured:
# measuring every row locked cost some 40 ms a row of 15 MB, a thousand of them a claim.
_CLAIM = """
WITH candidates AS MATERIALIZED (
    SELECT id, coalesce(pg_column_size(response), 0) + coalesce(pg_column_size(request), 0) AS stored
    FROM tracker.submissions
    WHERE {which}
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), within AS MATERIALIZED (  -- the stored sizes: cheap, and a bound on what may fit
    SELECT id FROM (SELECT id, sum(stored) OVER (ORDER BY id) - stored AS before FROM candidates) c
    WHERE before < $2
), measured AS MATERIALIZED (  -- apart: only those rows are rendered to measure
    SELECT s.id, coalesce(octet_length(s.response::text), 0) AS response_bytes,
           coalesce(octet_length(s.request::text), 0) AS request_bytes
    FROM tracker.submissions s JOIN within w ON w.id = s.id
), sized AS (
    SELECT id, response_bytes, request_bytes,
           greatest(response_bytes, request_bytes) > $3 AS too_large,
           CASE WHEN greatest(response_bytes, request_bytes) > $3 THEN 0
                ELSE response_bytes + request_bytes END AS size
    FROM measured
), picked AS (
    SELECT * FROM (SELECT *, sum(size) OVER (ORDER BY id) - size AS before FROM sized) c
    WHERE before < $2
)
SELECT s.id, s.vendor, s.client_ref, s.vendor_ref, s.recipient,
       CASE WHEN s.submitted_at >= '2000-01-01' AND s.submitted_at < now() + interval '1 day'
            THEN s.submitted_at END AS submitted_at,
       s.submitted_at::text AS submitted_text,
       CASE WHEN NOT p.too_large THEN s.response END AS response,
       CASE WHEN NOT p.too_large THEN s.request END AS request,
       CASE WHEN p.too_large THEN greatest(p.response_bytes, p.request_bytes) END
           AS response_too_large,
       CASE WHEN p.too_large THEN
           CASE WHEN p.response_bytes >= p.request_bytes THEN 'response' ELSE 'request' END
       END AS too_large_field,
       $3 AS response_limit,
       p.size AS stored_size
FROM tracker.submissions s
JOIN picked p ON p.id = s.id
ORDER BY s.id
"""
CLAIM_SUBMISSIONS = _CLAIM.format(which="processed_at IS NULL AND id > $4  -- past the rows this batch claimed already")

# The next unprocessed row after $1, its id alone locked (tracker.intake.claims, when careful):
# then its contents are fetched by CLAIM_SUBMISSION_BY_ID in a savepoint, and if PostgreSQL
# cannot hand them over, exactly this row is refused (never a row that committed meanwhile).
CLAIM_SUBMISSION_BARE = """
SELECT id FROM tracker.submissions
WHERE processed_at IS NULL AND id > $1
ORDER BY id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""

# CLAIM_SUBMISSIONS for one row this transaction holds already (CLAIM_SUBMISSION_BARE): id $4.
CLAIM_SUBMISSION_BY_ID = _CLAIM.format(which="id = $4")

# $1 ids for new messages, from the messages' own sequence, in increasing order.
RESERVE_MESSAGE_IDS = """
SELECT array_agg(id ORDER BY id)
FROM (SELECT nextval('tracker.messages_id_seq') AS id FROM generate_series(1, $1)) ids
"""

# New messages, in the state their submit reports raise them to (tracker.intake.plan); a key
# that exists already is left alone (its reports go through the reducer). Each new message says
# whether reports are waiting for it (orphans: adopted by the caller). Rows in $1, their ids in $2
# (RESERVE_MESSAGE_IDS), zipped in order: rows come sorted by key and inserted in that order
# (ROWS FROM keeps it), so that two intakes sharing keys never deadlock, while the ids, reserved
# in order of first appearance, keep a campaign's messages in its order. Rows: 0 vendor,
# 1 vendor_ref, 2 recipient_key, 3 issued_ref (NULL: as vendor_ref), 4 recipient, 5 client_ref,
# 6 submission_id, 7 submitted_at, 8 vendor_deadline, 9 window_ends_at, 10 next_poll_at,
# 11 state, 12 delivered_at, 13-15 failure code, reason, permanent, 16 last_report_at,
# 17 country, 18 calling_code.
INSERT_NEW_MESSAGES = """
WITH new AS (
    INSERT INTO tracker.messages (
        id, vendor, vendor_ref, recipient_key, issued_ref, recipient, client_ref, submission_id,
        submitted_at, vendor_deadline, window_ends_at, next_poll_at, state, delivered_at,
        failure_code, failure_reason, failure_permanent, last_report_at, country, calling_code)
    SELECT id, r->>0, r->>1, r->>2, r->>3, r->>4, r->>5, (r->>6)::bigint, (r->>7)::timestamptz,
           (r->>8)::timestamptz, (r->>9)::timestamptz, (r->>10)::timestamptz,
           (r->>11)::tracker.state, (r->>12)::timestamptz, r->>13, r->>14, (r->>15)::boolean,
           (r->>16)::timestamptz, r->>17, (r->>18)::integer
    FROM ROWS FROM (jsonb_array_elements($1::jsonb), unnest($2::bigint[])) AS rows(r, id)
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
