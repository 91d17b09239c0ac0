-- A delivery position, once a reader has seen it, is never taken back (issue #15's review,
-- session 19). Consumers acknowledge by event id (DESIGN: ack_events(consumer, event_id)), which
-- ack_events turns into the event's position as it is now; a position a reader saw that was
-- then taken back and given again (to other events, since events commit out of id order) made
-- a later ack pass over an event the consumer never read. Two ways it happened:
--
-- * The daemon's publication committed without waiting for its WAL flush (013). A reader saw its
--   positions at once; a crash lost them; the publication made again after the restart numbered
--   a different set of events (one that had committed meanwhile came first). Now a transaction
--   that publishes commits with synchronous_commit on, whatever its session's setting: its
--   positions become visible only once they are on disk (one flush per publication).
-- * read_events and read_sink_batch published inside the reader's own transaction and returned
--   the positions they had just given: a reader that rolled back (or whose commit failed) had
--   read positions that no longer existed. Now they publish nothing: they read what the daemon's
--   publisher (tracker/events.py, woken by every commit that writes transitions) has published,
--   "without moving anything", as DESIGN says. A reader no longer takes the publisher row either,
--   so a consumer's long transaction can no longer hold publication back.

CREATE OR REPLACE FUNCTION tracker.publish_events(max_events int DEFAULT 10000) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
    n    int;
BEGIN
    SELECT last_pos INTO base FROM tracker.event_publisher FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    WITH todo AS MATERIALIZED (
        SELECT event_id, row_number() OVER (ORDER BY event_id) AS rn
        FROM tracker.transitions
        WHERE pos IS NULL
        ORDER BY event_id
        LIMIT max_events
    )
    UPDATE tracker.transitions t SET pos = base + todo.rn
    FROM todo WHERE t.event_id = todo.event_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        UPDATE tracker.event_publisher SET last_pos = base + n;
        -- visible to readers only once on disk: a position lost in a crash after a reader saw it
        -- would be given again to another event
        PERFORM set_config('synchronous_commit', 'on', true);
        PERFORM pg_notify('tracker_events', n::text);  -- delivered when this publication commits
    END IF;
    RETURN n;
END $$;

CREATE OR REPLACE FUNCTION tracker.publish_waiting(max_events int DEFAULT 10000, wait_ms int DEFAULT 2000)
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', wait_ms || 'ms', true);
    PERFORM 1 FROM tracker.event_publisher FOR UPDATE;  -- wait for it
    RETURN tracker.publish_events(max_events);  -- commits with synchronous_commit on
END $$;

CREATE OR REPLACE FUNCTION tracker.read_events(consumer text, max_events int)
RETURNS TABLE (
    event_id bigint, message_id bigint, vendor text, vendor_ref text, recipient text,
    client_ref text, from_state tracker.state, to_state tracker.state, source tracker.source,
    occurred_at timestamptz, recorded_at timestamptz, failure_code text, failure_reason text,
    failure_permanent boolean, is_correction boolean, pos bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    cursor_pos bigint;
BEGIN
    PERFORM tracker.check_consumer_name(read_events.consumer);
    IF max_events IS NULL OR max_events < 0 THEN
        RAISE EXCEPTION 'max_events must be 0 or more, got %', coalesce(max_events::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    cursor_pos := coalesce((SELECT c.acked_pos FROM tracker.consumers c
                            WHERE c.consumer = read_events.consumer), 0);
    RETURN QUERY SELECT * FROM tracker.events_after(cursor_pos, max_events) e ORDER BY e.pos;
END $$;

CREATE OR REPLACE FUNCTION tracker.read_sink_batch(sink text, after_pos bigint, max_events int)
RETURNS TABLE (
    event_id bigint, message_id bigint, vendor text, vendor_ref text, recipient text,
    client_ref text, from_state tracker.state, to_state tracker.state, source tracker.source,
    occurred_at timestamptz, recorded_at timestamptz, failure_code text, failure_reason text,
    failure_permanent boolean, is_correction boolean, pos bigint, message_pending boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    cursor_pos bigint;
BEGIN
    cursor_pos := greatest(after_pos, coalesce((SELECT c.acked_pos FROM tracker.consumers c
                                                WHERE c.consumer = 'sink:' || read_sink_batch.sink), 0));
    RETURN QUERY
    SELECT e.*, EXISTS (SELECT FROM tracker.sink_deliveries d
                        WHERE d.sink = read_sink_batch.sink AND d.message_id = e.message_id
                          AND d.status = 'pending')
    FROM tracker.events_after(cursor_pos, max_events) e
    ORDER BY e.pos;
END $$;

-- Only read_events and read_sink_batch asked whether they might publish (sql/018).
DROP FUNCTION tracker.may_publish();
