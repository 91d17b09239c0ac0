-- A sink's cursor (consumer `sink:<name>`) was moved by anyone's ack_events: one mistaken call
-- (a name copied from tracker.consumers) moved a webhook or NATS sink past events it never sent,
-- with nothing dead-lettered and sink_status 0 behind. register_consumer and forget_consumer
-- refuse such names already (023). Now ack_events does too, from a session that names itself
-- otherwise than the daemon's main pool ('tracker'; psql, a consumer that names itself): a
-- guard against mistakes, not a permission. A session with no name is let through: a daemon of
-- a release before session names (its sinks would fail, its /readyz 503, for the whole of a
-- rolling upgrade); asyncpg names none by default.
CREATE OR REPLACE FUNCTION tracker.ack_events(consumer text, event_id bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    p bigint;
BEGIN
    PERFORM tracker.check_consumer_name(ack_events.consumer);
    IF ack_events.consumer LIKE 'sink:%' AND current_setting('application_name') NOT IN ('tracker', '') THEN
        RAISE EXCEPTION 'consumer % is a sink''s cursor: only the daemon moves it (`tracker sinks status`; `tracker sinks redrive` sends again)',
            ack_events.consumer USING ERRCODE = 'invalid_parameter_value';
    END IF;
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

-- A downstream consumer's role needed grants on the tables behind these functions (they ran
-- with the caller's rights), written nowhere, and with them it could write any cursor directly.
-- Now they run as their owner, with a search_path that only holds the catalog (every name in
-- them is schema-qualified), and a consumer's role needs only USAGE on the schema and EXECUTE
-- on them (README, "Reading results"). Not granted to PUBLIC: a read-only role (Grafana's)
-- must not move or forget cursors.
ALTER FUNCTION tracker.read_events(text, int) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION tracker.ack_events(text, bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION tracker.register_consumer(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION tracker.forget_consumer(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION tracker.read_events(text, int), tracker.ack_events(text, bigint),
    tracker.register_consumer(text), tracker.forget_consumer(text) FROM PUBLIC;
