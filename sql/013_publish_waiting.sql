-- The daemon's publisher in one statement (tracker/events.py, issue #15). It used to take five
-- round trips per publication (BEGIN; SET LOCAL lock_timeout; SELECT ... FOR UPDATE; SELECT
-- publish_events(); COMMIT), each a hop between two processes on the path from a postback to
-- the consumer that hears of it. Now one, outside a transaction block:
--   * it waits for the publisher row (at most wait_ms; lock_not_available after that), where
--     read_events skips it: a consumer holding the row in a long transaction delays
--     publication, never loses it;
--   * it commits without waiting for the WAL flush: a publication is no transition and leads to
--     no 200; whatever a consumer or sink makes durable after reading it (an ack, a delivery
--     row) commits with synchronous_commit on and so flushes the publication first (the WAL is
--     written in order); a publication lost in a crash before that is made again, from the same
--     unpublished events;
--   * publish_events() sends NOTIFY tracker_events when this commits (010).
CREATE FUNCTION tracker.publish_waiting(max_events int DEFAULT 10000, wait_ms int DEFAULT 2000)
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', wait_ms || 'ms', true);
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM 1 FROM tracker.event_publisher FOR UPDATE;  -- wait for it (read_events skips it)
    RETURN tracker.publish_events(max_events);
END $$;
