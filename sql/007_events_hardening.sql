-- Hostile input to the consumer contract (issue #11). Names, arguments and returned columns of
-- tracker.read_events and tracker.ack_events stay exactly as in 002; only their checks change.
--
-- 1. Consumer names are 1..200 characters. A longer name used to fail deep inside the primary
--    key's btree ("index row size exceeds maximum") or, in read_events, to be accepted for a
--    consumer that could never acknowledge anything. Both functions now refuse it up front with
--    invalid_parameter_value and a message saying why.
-- 2. read_events works inside a READ ONLY transaction (and on a hot standby). It publishes
--    committed events first, which writes, so in a read-only transaction it skips publishing and
--    returns only events already given a position by an earlier read-write read_events (or any
--    call of tracker.publish_events()). A read-only reader is therefore never wrong, but may lag
--    until some read-write session publishes.

-- Raises invalid_parameter_value unless `consumer` is a usable consumer name.
CREATE FUNCTION tracker.check_consumer_name(consumer text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF consumer IS NULL OR char_length(consumer) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'consumer name must be 1 to 200 characters, got %',
            coalesce(char_length(consumer)::text || ' characters', 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Rows written directly, not through ack_events, are held to the same bound. NOT VALID: a
-- longer name stored before this migration stays readable rather than failing the upgrade.
ALTER TABLE tracker.consumers
    ADD CONSTRAINT consumers_name_length CHECK (char_length(consumer) BETWEEN 1 AND 200) NOT VALID;

CREATE OR REPLACE FUNCTION tracker.read_events(consumer text, max_events int)
RETURNS TABLE (
    event_id bigint, message_id bigint, vendor text, vendor_ref text, recipient text,
    client_ref text, from_state tracker.state, to_state tracker.state, source tracker.source,
    occurred_at timestamptz, recorded_at timestamptz, failure_code text, failure_reason text,
    failure_permanent boolean, is_correction boolean, pos bigint
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tracker.check_consumer_name(read_events.consumer);
    IF max_events IS NULL OR max_events < 0 THEN
        RAISE EXCEPTION 'max_events must be 0 or more, got %', coalesce(max_events::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Publishing writes; a read-only transaction reads what is already published.
    IF current_setting('transaction_read_only') = 'off' THEN
        PERFORM tracker.publish_events();
    END IF;
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
CREATE OR REPLACE FUNCTION tracker.ack_events(consumer text, event_id bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    p bigint;
BEGIN
    PERFORM tracker.check_consumer_name(ack_events.consumer);
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
