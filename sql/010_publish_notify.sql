-- Consumers are never left asleep (issue #11). `NOTIFY tracker_events` used to be sent at the
-- writer's commit, before the events had delivery positions; positions were given inside
-- read_events, which skips publishing while another reader holds the publisher row, so a woken
-- consumer could read nothing and sleep until the next event. Now writers notify
-- `tracker_transitions` (for the daemon's publisher, tracker/events.py), and the publication
-- itself notifies `tracker_events` when it commits: a consumer woken by it finds the events.
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
        PERFORM pg_notify('tracker_events', n::text);  -- delivered when this publication commits
    END IF;
    RETURN n;
END $$;
