-- Consumers known before their first ack, and consumers forgotten (issue #15's review, session 20).
--
-- Retention keeps every event a known consumer has not acknowledged (DESIGN §9), but a consumer
-- was known only from its first ack: one that read a backlog older than
-- retention.transitions_days, and acked after, could lose events removed in between. And a
-- consumer gone for good held retention back for ever, with nothing but SQL to drop it.
--
-- register_consumer (in a READ COMMITTED transaction of its own) makes a consumer known before it reads: from its commit on, retention keeps
-- every event still in the outbox until the consumer acknowledges it. Its cursor starts before the
-- oldest event there (reads are the same as an unknown consumer's: from the beginning; its lag
-- counts only events it can still read). forget_consumer drops a cursor; a sink's cursor
-- ('sink:<name>') is refused by both: `tracker sinks forget` drops a sink with its deliveries.
-- (Registering at the first read was tried in session 19 and reverted: a read under REPEATABLE
-- READ then wrote, and a stray read held retention back for good.)

-- The retention horizon (tracker.acknowledged_pos) and the consumers it is made of, one at a time:
-- each retention batch holds this shared, from before it reads the horizon until it commits
-- (tracker.retention); register_consumer holds it alone. Without it, a consumer registered
-- while a batch ran was placed before events that batch was removing: removed once it had
-- committed, though still there when the consumer was.
CREATE FUNCTION tracker.lock_horizon(exclusive boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF exclusive THEN
        PERFORM pg_advisory_xact_lock(8624700230023);
    ELSE
        PERFORM pg_advisory_xact_lock_shared(8624700230023);
    END IF;
END $$;

CREATE FUNCTION tracker.check_not_a_sink(consumer text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF consumer LIKE 'sink:%' THEN
        RAISE EXCEPTION 'consumer % is a sink''s cursor: use `tracker sinks forget`', consumer
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- The consumer's acknowledged position: the one it had, else a new one just before the oldest
-- published event still kept (nothing published yet: the publisher's last position).
CREATE FUNCTION tracker.register_consumer(consumer text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    p bigint;
BEGIN
    PERFORM tracker.check_consumer_name(register_consumer.consumer);
    PERFORM tracker.check_not_a_sink(register_consumer.consumer);
    -- Under REPEATABLE READ the snapshot below would be older than the wait for the lock: the
    -- position would count events a batch removed meanwhile. And the lock is the transaction's:
    -- held open, it holds retention's batches back (they fail, counted). Its own transaction.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'register_consumer must run under READ COMMITTED (in a transaction of its own), not %',
            upper(current_setting('transaction_isolation')) USING ERRCODE = 'invalid_transaction_state';
    END IF;
    PERFORM tracker.lock_horizon(true);  -- the batch running now commits first (a new snapshot below)
    INSERT INTO tracker.consumers AS c (consumer, acked_pos)
    SELECT register_consumer.consumer,
           coalesce((SELECT min(t.pos) - 1 FROM tracker.transitions t WHERE t.pos IS NOT NULL),
                    (SELECT e.last_pos FROM tracker.event_publisher e))
    ON CONFLICT ON CONSTRAINT consumers_pkey DO NOTHING;
    SELECT c.acked_pos INTO p FROM tracker.consumers c WHERE c.consumer = register_consumer.consumer;
    RETURN p;
END $$;

-- Whether there was such a consumer. Retention no longer waits for it.
CREATE FUNCTION tracker.forget_consumer(consumer text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tracker.check_consumer_name(forget_consumer.consumer);
    PERFORM tracker.check_not_a_sink(forget_consumer.consumer);
    DELETE FROM tracker.consumers c WHERE c.consumer = forget_consumer.consumer;
    RETURN FOUND;
END $$;

-- Each consumer (sinks have tracker.sink_status): its position, the events it has not
-- acknowledged (published or not yet), how long the oldest of them has waited, and when its
-- cursor last moved (or was registered).
CREATE VIEW tracker.consumer_status AS
SELECT c.consumer, c.acked_pos AS position,
       greatest(p.last_pos - c.acked_pos, 0) + u.unpublished AS events_behind,
       clock_timestamp() - least((SELECT t.recorded_at FROM tracker.transitions t
                                  WHERE t.pos > c.acked_pos ORDER BY t.pos LIMIT 1),
                                 u.oldest) AS oldest_unacked_age,
       c.updated_at
FROM tracker.consumers c
CROSS JOIN tracker.event_publisher p
CROSS JOIN (SELECT count(*) AS unpublished, min(recorded_at) AS oldest
            FROM tracker.transitions WHERE pos IS NULL) u
WHERE c.consumer NOT LIKE 'sink:%';
