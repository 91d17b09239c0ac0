-- Retention of a sink's dead letters (retention.sink_dead_letters_days; 0, the default, keeps them
-- for ever). A dead letter is an event a sink gave up on, kept in tracker.sink_deliveries with
-- the very body it sent, so that `tracker sinks redrive` can send it again: for years of
-- receivers' outages they only grew. Removed only once dead longer than the cutoff; one an
-- operator redrove meanwhile (pending again) is not a dead letter and stays.
--
-- Walked by event_id as the other kinds walk their ids (sql/021: tracker.retention_cursors),
-- every sink's together. An event dead for two sinks is two rows of one id: a batch takes every
-- row of the ids it reaches (at most max_rows and one row per other sink more), so that the next
-- batch, after its last id, leaves none of them behind.
-- The index is built under a lock that holds the sinks' writes (a fraction of a second on
-- 500,000 rows): it waits at most 5 s for that lock behind another session's open transaction,
-- rather than queue every writer behind it for as long; then the migration fails, changes
-- nothing, and is tried again (ExecStartPre, or by hand).
SET LOCAL lock_timeout = '5s';
CREATE INDEX IF NOT EXISTS sink_deliveries_dead_event ON tracker.sink_deliveries (event_id)
    WHERE status = 'dead';

CREATE OR REPLACE FUNCTION tracker.retain_sink_dead_letters(after bigint, cutoff timestamptz, max_rows int)
RETURNS tracker.retention_batch LANGUAGE sql AS $$
    WITH reached AS MATERIALIZED (
        SELECT max(event_id) AS last_id FROM (
            SELECT event_id FROM tracker.sink_deliveries
            WHERE status = 'dead' AND event_id > after ORDER BY event_id LIMIT max_rows) first_rows
    ), examined AS MATERIALIZED (
        SELECT sink, event_id, dead_at < cutoff AS old FROM tracker.sink_deliveries
        WHERE status = 'dead' AND event_id > after AND event_id <= (SELECT last_id FROM reached)
    ), doomed AS MATERIALIZED (
        SELECT d.sink, d.event_id FROM tracker.sink_deliveries d
        JOIN examined e ON e.sink = d.sink AND e.event_id = d.event_id
        WHERE e.old AND d.status = 'dead' AND d.dead_at < cutoff
        FOR UPDATE OF d SKIP LOCKED
    ), gone AS (
        DELETE FROM tracker.sink_deliveries d USING doomed x
        WHERE d.sink = x.sink AND d.event_id = x.event_id RETURNING 1
    )
    SELECT (SELECT max(event_id) FROM examined), (SELECT count(*) FROM examined WHERE old),
           (SELECT count(*) FROM gone), NULL::jsonb
$$;
