-- Retention of a sink's dead letters (retention.sink_dead_letters_days; 0, the default, keeps them
-- for ever). A dead letter is an event a sink gave up on, kept in tracker.sink_deliveries with
-- the very body it sent, so that `tracker sinks redrive` can send it again: for years of
-- receivers' outages they only grew. Removed only once dead longer than the cutoff; one an
-- operator redrove meanwhile (pending again) is not a dead letter and stays.
--
-- Oldest first by when they died, not walked by id as the other kinds are: a letter redriven
-- and dead again keeps its low event id with a new dead_at, and a walk by id stopped at such
-- young ones and never reached older letters past them. `after` is not used (each batch takes
-- the oldest left); a batch's last_id is 0 while it found old letters, NULL when none is left.
--
-- The index is built under a lock that holds the sinks' writes (a fraction of a second on
-- 500,000 rows): it waits at most 5 s for that lock behind another session's open transaction,
-- rather than queue every writer behind it for as long; then the migration fails, changes
-- nothing, and is tried again (ExecStartPre, or by hand).
SET LOCAL lock_timeout = '5s';
CREATE INDEX IF NOT EXISTS sink_deliveries_dead_at ON tracker.sink_deliveries (dead_at)
    WHERE status = 'dead';

CREATE OR REPLACE FUNCTION tracker.retain_sink_dead_letters(after bigint, cutoff timestamptz, max_rows int)
RETURNS tracker.retention_batch LANGUAGE sql AS $$
    WITH doomed AS MATERIALIZED (
        SELECT sink, event_id FROM tracker.sink_deliveries
        WHERE status = 'dead' AND dead_at < cutoff
        ORDER BY dead_at LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM tracker.sink_deliveries d USING doomed x
        WHERE d.sink = x.sink AND d.event_id = x.event_id RETURNING 1
    )
    SELECT CASE WHEN EXISTS (SELECT FROM doomed) THEN 0::bigint END, (SELECT count(*) FROM doomed),
           (SELECT count(*) FROM gone), NULL::jsonb
$$;
