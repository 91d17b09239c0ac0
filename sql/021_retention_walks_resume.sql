-- Retention walks that reach the rows they are meant to remove (tracker.retention, docs/retention.md).
--
-- Each kind's sweep walked its table in id order from id 0, within its share of the sweep's time
-- budget (60 s / 6 kinds). The oldest part of tracker.submissions is rows taken in: older than
-- refused_rows_days but kept until their messages go (final_messages_days, 90). A sweep spent its
-- share examining them (some 76,000 rows), never reached the refused rows further along, and the
-- next sweep began at 0 again: refused rows were never removed and RetentionBehind stayed on. Any
-- walking kind with a head of rows kept longer (reports of messages not final, events a reader has
-- not acknowledged, messages with work left) could be stuck the same way.
--
-- Now:
-- - tracker.retain_refused_rows examines only candidates (refused, or naming no message), found by
--   the partial index submissions_refused: the rows taken in are never read.
-- - Each kind's walk resumes where the last sweep stopped for lack of time
--   (tracker.retention_cursors), and begins at id 0 again only once it has reached rows too young
--   to go or the end of its table. The cursor is only where to look next: a lost or stale one
--   costs rows examined again, never a row removed that should stay.
--
-- Building the index holds a SHARE lock on tracker.submissions (inserts wait) for one scan of the
-- table; it cannot be built CONCURRENTLY inside the migration's transaction.

CREATE INDEX submissions_refused ON tracker.submissions (id)
    WHERE error IS NOT NULL OR message_count = 0;

-- Where each kind's walk goes on at the next sweep (the `after` of its next batch).
CREATE TABLE tracker.retention_cursors (
    kind       text PRIMARY KEY,
    after_id   bigint NOT NULL CHECK (after_id >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- As in 009, but the walk is over candidates only (the predicate is submissions_refused's, so the
-- planner reads that index): `old` counts candidates older than the cutoff, and the walk stops at
-- the first batch of young ones. Name, arguments and result are 009's.
CREATE OR REPLACE FUNCTION tracker.retain_refused_rows(after bigint, cutoff timestamptz, max_rows int)
RETURNS tracker.retention_batch LANGUAGE sql AS $$
    WITH examined AS MATERIALIZED (
        SELECT id, created_at < cutoff AS old FROM tracker.submissions
        WHERE id > after AND (error IS NOT NULL OR message_count = 0)
        ORDER BY id LIMIT max_rows
    ), doomed AS MATERIALIZED (
        SELECT s.id FROM tracker.submissions s JOIN examined e ON e.id = s.id
        WHERE e.old AND s.processed_at < cutoff AND (s.error IS NOT NULL OR s.message_count = 0)
          AND NOT EXISTS (SELECT 1 FROM tracker.messages m WHERE m.submission_id = s.id)
        FOR UPDATE OF s SKIP LOCKED
    ), gone AS (
        DELETE FROM tracker.submissions s USING doomed d WHERE s.id = d.id RETURNING 1
    )
    SELECT (SELECT max(id) FROM examined), (SELECT count(*) FROM examined WHERE old),
           (SELECT count(*) FROM gone), NULL::jsonb
$$;
