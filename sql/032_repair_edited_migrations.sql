-- What two migrations became after some databases had applied them (only the version was
-- checked, so those databases kept the earlier file's schema, silently; the files' hashes are
-- kept since, tracker.db.migrate): made here where it is missing, and the same where it is not.
-- 027 first only added tracker.sinks.acked_stream; it then also made tracker.sink_runners (the
-- daemons' heartbeat that `tracker sinks forget` reads: without it the sinks' heartbeat failed).
CREATE TABLE IF NOT EXISTS tracker.sink_runners (
    sink    text NOT NULL REFERENCES tracker.sinks (name) ON DELETE CASCADE,
    runner  text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, runner)
);

-- 025 first walked a sink's dead letters by event id, which stopped at a letter redriven and
-- dead again and never reached older ones past it; it then walked them by when they died.
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
