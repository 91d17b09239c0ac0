-- Vendor ids as issued (issue #11): messages.vendor_ref is the id normalized for matching;
-- where the vendor issued it otherwise (leading zeros, case, spaces), messages.issued_ref
-- (sql/006) keeps it as given. What is shown (views, events) is the id as issued.

CREATE OR REPLACE VIEW tracker.message_status AS
SELECT m.id AS message_id, m.vendor, coalesce(m.issued_ref, m.vendor_ref) AS vendor_ref,
       m.recipient, m.client_ref, m.state,
       m.state >= 'unknown' AS is_final,
       m.submitted_at, m.updated_at, m.delivered_at,
       m.failure_code, m.failure_reason, m.failure_permanent,
       m.last_report_at, m.next_poll_at, m.window_ends_at, m.vendor_deadline, m.submission_id,
       m.vendor_ref AS match_ref, m.country, m.calling_code, m.operator
FROM tracker.messages m;

CREATE OR REPLACE VIEW tracker.stuck_messages AS
SELECT m.id AS message_id, m.vendor, coalesce(m.issued_ref, m.vendor_ref) AS vendor_ref,
       m.recipient, m.client_ref, m.state,
       m.submitted_at, coalesce(m.last_report_at, m.submitted_at) AS last_heard_at,
       now() - coalesce(m.last_report_at, m.submitted_at) AS silent_for,
       m.next_poll_at, m.window_ends_at
FROM tracker.messages m
LEFT JOIN tracker.vendor_settings v ON v.vendor = m.vendor
WHERE m.state < 'unknown'
  AND coalesce(m.last_report_at, m.submitted_at)
      < now() - make_interval(secs => coalesce(v.expected_final_s, 3600));

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
    SELECT t.event_id, t.message_id, m.vendor, coalesce(m.issued_ref, m.vendor_ref), m.recipient,
           m.client_ref, t.from_state, t.to_state, t.source, t.occurred_at, t.recorded_at,
           t.failure_code, t.failure_reason, t.failure_permanent, t.is_correction, t.pos
    FROM tracker.transitions t
    JOIN tracker.messages m ON m.id = t.message_id
    WHERE t.pos > coalesce((SELECT c.acked_pos FROM tracker.consumers c
                            WHERE c.consumer = read_events.consumer), 0)
    ORDER BY t.pos
    LIMIT max_events;
END $$;
