-- Two tables that grew without bound (tracker.retention, docs/retention.md).
--
-- 1. Submission rows no message points to. A row that names a message already tracked (a
--    resubmission, an id used again) is taken in normally, with message_count the ids it names,
--    but the message points to the first row that named it (messages.submission_id). No kind
--    removed such a row: final_messages removes the rows its messages point to, refused_rows
--    only refused rows and rows that named no message. Kind unreferenced_rows removes them once
--    processed before the cutoff, which is final_messages_days' (a submission row is kept as
--    long as the messages are): walked by id like the other kinds, the rows older than that
--    which stay (rows of messages kept longer) are few, and the walk resumes past them
--    (sql/021). Refused rows and rows that named no message stay refused_rows' (its key says how
--    long they are kept, 0 for ever). A row not taken in yet (processed_at NULL), or one a
--    message points to, is never removed; a row intake holds is passed over. No view needs a
--    submission row no message points to.
CREATE FUNCTION tracker.retain_unreferenced_rows(after bigint, cutoff timestamptz, max_rows int)
RETURNS tracker.retention_batch LANGUAGE sql AS $$
    WITH examined AS MATERIALIZED (
        SELECT id, created_at < cutoff AS old FROM tracker.submissions
        WHERE id > after ORDER BY id LIMIT max_rows
    ), doomed AS MATERIALIZED (
        SELECT s.id FROM tracker.submissions s JOIN examined e ON e.id = s.id
        WHERE e.old AND s.processed_at < cutoff
          AND s.error IS NULL AND s.message_count IS DISTINCT FROM 0  -- not refused_rows'
          AND NOT EXISTS (SELECT 1 FROM tracker.messages m WHERE m.submission_id = s.id)
        FOR UPDATE OF s SKIP LOCKED
    ), gone AS (
        DELETE FROM tracker.submissions s USING doomed d WHERE s.id = d.id RETURNING 1
    )
    SELECT (SELECT max(id) FROM examined), (SELECT count(*) FROM examined WHERE old),
           (SELECT count(*) FROM gone), NULL::jsonb
$$;

-- 2. tracker.poll_stats gained a row per polled vendor at every daemon start (a replica's name
--    is host/pid/random), kept as history (sql/005), all summed by tracker.vendor_health and
--    read by the slot query every 5 s. The rows of replicas stopped, or silent, since before the
--    cutoff are folded into one history row per vendor, replica '(history)' (a replica's name
--    has slashes), in the same transaction: polls_ok and polls_failed added, the latest
--    success, the latest error with its text. It is always stopped, so it never counts as a
--    replica polling now (vendor_health's circuit and polling_replicas, the slots' share, the
--    status page's replicas): what vendor_health shows is the same before and after. A
--    replica that reports again after its row was folded writes a new row: its flushes add what
--    happened since the last one (tracker.poller.health.Stats), so nothing is counted twice.
--    A row being written by its replica is passed over; a batch of max_rows rows says more may
--    be left (last_id 0), one with fewer that the fold is done (NULL). `after` is not used.
CREATE FUNCTION tracker.retain_poll_stats(after bigint, cutoff timestamptz, max_rows int)
RETURNS tracker.retention_batch LANGUAGE sql AS $$
    WITH doomed AS MATERIALIZED (
        SELECT vendor, replica FROM tracker.poll_stats
        WHERE replica <> '(history)' AND greatest(updated_at, stopped_at) < cutoff
        ORDER BY greatest(updated_at, stopped_at) LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM tracker.poll_stats s USING doomed d
        WHERE s.vendor = d.vendor AND s.replica = d.replica
        RETURNING s.*
    ), folded AS (
        SELECT vendor, sum(polls_ok) AS polls_ok, sum(polls_failed) AS polls_failed,
               max(last_success_at) AS last_success_at, max(last_error_at) AS last_error_at,
               (array_agg(last_error ORDER BY last_error_at DESC NULLS LAST))[1] AS last_error,
               max(greatest(updated_at, stopped_at)) AS stopped_at
        FROM gone GROUP BY vendor
    ), history AS (
        INSERT INTO tracker.poll_stats AS h (vendor, replica, polls_ok, polls_failed, last_success_at,
                                             last_error_at, last_error, stopped_at)
        SELECT vendor, '(history)', polls_ok, polls_failed, last_success_at, last_error_at,
               last_error, stopped_at
        FROM folded
        ON CONFLICT (vendor, replica) DO UPDATE SET
            polls_ok = h.polls_ok + excluded.polls_ok,
            polls_failed = h.polls_failed + excluded.polls_failed,
            last_success_at = greatest(h.last_success_at, excluded.last_success_at),
            last_error_at = greatest(h.last_error_at, excluded.last_error_at),
            last_error = CASE WHEN h.last_error_at IS NULL OR excluded.last_error_at > h.last_error_at
                              THEN excluded.last_error ELSE h.last_error END,
            updated_at = now(),
            stopped_at = greatest(h.stopped_at, excluded.stopped_at)
        RETURNING 1
    )
    SELECT CASE WHEN (SELECT count(*) FROM doomed) >= max_rows THEN 0::bigint END,
           (SELECT count(*) FROM doomed), (SELECT count(*) FROM gone), NULL::jsonb
$$;
