-- tracker.read_events (and tracker.read_sink_batch) inside a REPEATABLE READ or SERIALIZABLE
-- transaction.
--
-- Both publish committed events before reading (tracker.publish_events: the publisher row FOR
-- UPDATE SKIP LOCKED, then positions given to the events). In a transaction whose snapshot was
-- taken before the daemon's publisher (or any other reader) last published, that row lock
-- raised "could not serialize access due to concurrent update" (SerializationError): SKIP
-- LOCKED passes over a row locked now, not one updated since the snapshot. A consumer reading
-- its events in the same repeatable-read transaction as its own queries had its whole
-- transaction aborted whenever the daemon had published since the transaction's first query.
--
-- Now, as in a read-only transaction (007), read_events and read_sink_batch publish only under
-- READ COMMITTED (or READ UNCOMMITTED, which PostgreSQL runs as READ COMMITTED); under a
-- snapshot isolation level they return what is published as of the transaction's snapshot.
-- Nothing is skipped: the events not yet published get positions after every position already
-- given, from the next publication (the daemon's, or a read-committed read_events), and the
-- consumer reads them at its next read. The isolation level is checked rather than the
-- serialization failure caught: an EXCEPTION block would cost a subtransaction on every read.
-- Names, arguments and returned columns are those of 015; only when they publish changes.

-- Whether this transaction may publish events: it can write, and each statement takes a fresh
-- snapshot (READ COMMITTED), so the publisher row taken FOR UPDATE is the newest one.
CREATE FUNCTION tracker.may_publish() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT current_setting('transaction_read_only') = 'off'
       AND current_setting('transaction_isolation') IN ('read committed', 'read uncommitted')
$$;

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
    -- Publishing writes; a read-only transaction reads what is already published. So does a
    -- REPEATABLE READ or SERIALIZABLE one (tracker.may_publish).
    IF tracker.may_publish() THEN
        PERFORM tracker.publish_events();
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
    IF tracker.may_publish() THEN  -- as read_events
        PERFORM tracker.publish_events();
    END IF;
    cursor_pos := greatest(after_pos, coalesce((SELECT c.acked_pos FROM tracker.consumers c
                                                WHERE c.consumer = 'sink:' || read_sink_batch.sink), 0));
    RETURN QUERY
    SELECT e.*, EXISTS (SELECT FROM tracker.sink_deliveries d
                        WHERE d.sink = read_sink_batch.sink AND d.message_id = e.message_id
                          AND d.status = 'pending')
    FROM tracker.events_after(cursor_pos, max_events) e
    ORDER BY e.pos;
END $$;
