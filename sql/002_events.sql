-- Reading transition events: at least once, never skipping, in order per message.
--
-- Why not a plain `event_id > last_id` cursor: event ids are taken before commit, so a
-- transaction holding id 7 can commit after one holding id 8; a consumer that read 8 and moved
-- its cursor would never see 7. Instead each committed event is given a delivery position
-- `pos` by publish_events(), one publisher at a time, in event_id order. A row is visible to
-- the publisher only once committed, and positions are handed out under a row lock, so
-- positions become visible in increasing order with no gaps to skip over later.
-- Per message the order holds too: a message's transitions are written under its row lock,
-- so an earlier transition of a message is committed (and so publishable) before a later one
-- is even written.

CREATE TABLE tracker.event_publisher (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_pos bigint NOT NULL DEFAULT 0
);
INSERT INTO tracker.event_publisher DEFAULT VALUES;

CREATE TABLE tracker.consumers (
    consumer   text PRIMARY KEY,
    acked_pos  bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Give positions to committed, unpublished events. Returns how many were published.
-- Skips (returns 0) when another session is publishing right now: it will publish ours too.
CREATE FUNCTION tracker.publish_events(max_events int DEFAULT 10000) RETURNS int
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
    END IF;
    RETURN n;
END $$;

CREATE FUNCTION tracker.read_events(consumer text, max_events int)
RETURNS TABLE (
    event_id bigint, message_id bigint, vendor text, vendor_ref text, recipient text,
    client_ref text, from_state tracker.state, to_state tracker.state, source tracker.source,
    occurred_at timestamptz, recorded_at timestamptz, failure_code text, failure_reason text,
    failure_permanent boolean, is_correction boolean, pos bigint
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tracker.publish_events();
    RETURN QUERY
    SELECT t.event_id, t.message_id, m.vendor, m.vendor_ref, m.recipient, m.client_ref,
           t.from_state, t.to_state, t.source, t.occurred_at, t.recorded_at,
           t.failure_code, t.failure_reason, t.failure_permanent, t.is_correction, t.pos
    FROM tracker.transitions t
    JOIN tracker.messages m ON m.id = t.message_id
    WHERE t.pos > coalesce((SELECT c.acked_pos FROM tracker.consumers c
                            WHERE c.consumer = read_events.consumer), 0)
    ORDER BY t.pos
    LIMIT max_events;
END $$;

-- The consumer has handled every event up to and including event_id (in delivery order).
-- Acknowledging an older position than the stored one changes nothing (acks never go back).
CREATE FUNCTION tracker.ack_events(consumer text, event_id bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    p bigint;
BEGIN
    SELECT t.pos INTO p FROM tracker.transitions t WHERE t.event_id = ack_events.event_id;
    IF p IS NULL THEN
        RAISE EXCEPTION 'event % is unknown or not yet delivered', ack_events.event_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO tracker.consumers AS c (consumer, acked_pos) VALUES (ack_events.consumer, p)
    ON CONFLICT ON CONSTRAINT consumers_pkey
    DO UPDATE SET acked_pos = greatest(c.acked_pos, excluded.acked_pos), updated_at = now();
    RETURN p;
END $$;
