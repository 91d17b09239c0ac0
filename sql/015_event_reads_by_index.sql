-- Event reads that find each event's message by its primary key, whatever the statistics say
-- (issue #15, session 15).
--
-- read_events and read_sink_batch joined the events after the cursor to tracker.messages and
-- left the join to the planner. While tracker.transitions had no statistics yet (a new
-- deployment, the first minutes of a run: autoanalyze had not been by), the planner took a
-- third of the table to lie after any cursor and chose a hash join over a sequential scan of
-- every message: a consumer's first five reads (PL/pgSQL plans them with the values given
-- before it settles on a generic plan) each read all the messages to return a few events; on
-- 10,000 messages 9.5 ms a read, in the first quarter-second of every bench run.
--
-- Now both read through one function, tracker.events_after: the events after a position are
-- taken first (the position index, the limit), and each one's message is looked up through a
-- LATERAL subquery that OFFSET 0 keeps from being pulled up into a join: one index probe per
-- event read. Every event has its message (the foreign key), so the inner join returns the
-- same rows as before, in the same order.
-- tests/integration/test_event_read_plan.py counts the messages each read scans.
--
-- read_sink_batch, a copy of read_events' query, had not followed sql/011: it showed the
-- normalized vendor id (the webhook sinks sent "14364" for Spark Sender's "0014364"; the NATS
-- sinks, which read with read_events, did not). Through the one function it shows the id as
-- issued, as every event does.

CREATE FUNCTION tracker.events_after(after_pos bigint, max_events int)
RETURNS TABLE (
    event_id bigint, message_id bigint, vendor text, vendor_ref text, recipient text,
    client_ref text, from_state tracker.state, to_state tracker.state, source tracker.source,
    occurred_at timestamptz, recorded_at timestamptz, failure_code text, failure_reason text,
    failure_permanent boolean, is_correction boolean, pos bigint
)
LANGUAGE sql STABLE AS $$
    SELECT t.event_id, t.message_id, m.vendor, coalesce(m.issued_ref, m.vendor_ref), m.recipient,
           m.client_ref, t.from_state, t.to_state, t.source, t.occurred_at, t.recorded_at,
           t.failure_code, t.failure_reason, t.failure_permanent, t.is_correction, t.pos
    FROM (
        SELECT * FROM tracker.transitions t
        WHERE t.pos > after_pos
        ORDER BY t.pos
        LIMIT max_events
    ) t
    CROSS JOIN LATERAL (
        SELECT m.vendor, m.issued_ref, m.vendor_ref, m.recipient, m.client_ref
        FROM tracker.messages m WHERE m.id = t.message_id
        OFFSET 0  -- one index probe per event, never a join over every message
    ) m
    ORDER BY t.pos
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
    -- Publishing writes; a read-only transaction reads what is already published.
    IF current_setting('transaction_read_only') = 'off' THEN
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
    IF current_setting('transaction_read_only') = 'off' THEN
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
