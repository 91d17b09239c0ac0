-- Events out (issue #13, docs/events.md): named sinks, each a durable consumer of the outbox.
--
-- A sink's cursor is its row in tracker.consumers (consumer 'sink:<name>'), moved only by
-- tracker.ack_events, so a sink inherits the outbox's guarantees: at least once, never
-- skipping, in order per message.
-- - A webhook sink reads the outbox (one replica at a time per sink: the reader lease on its
--   row), sends what its filters take, and acknowledges a batch only in the transaction that
--   also records, in tracker.sink_deliveries, every event of it not delivered yet (failed, in
--   flight past the batch's budget, not sent, or queued behind an earlier event of its
--   message): an event is delivered, pending here or unacknowledged there, never none of them.
--   An event delivered at the first try never touches this table. Pending rows are claimed with
--   a lease, one message's events strictly one after another (a row is not claimable while an
--   earlier row of its message is pending), others in parallel. A delivered row is deleted; a
--   row whose retries are used up stays as a dead letter until redriven.
-- - A NATS JetStream sink acknowledges events after JetStream has acknowledged their publish;
--   it keeps no rows here.
-- Rows hold their own copy of the body, so retention of transitions never strands a delivery.
-- Secrets are never stored: errors are written already redacted, and URLs not at all.

CREATE TABLE tracker.sinks (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    kind            text NOT NULL CHECK (kind IN ('webhook', 'nats')),
    consumer        text NOT NULL UNIQUE,     -- its cursor: tracker.consumers.consumer
    created_at      timestamptz NOT NULL DEFAULT now(),
    configured_at   timestamptz NOT NULL DEFAULT now(),  -- last started with this sink configured
    last_success_at timestamptz,
    last_error      text,                     -- redacted
    last_error_at   timestamptz,
    disabled_at     timestamptz,              -- set by a 410 Gone; `tracker sinks enable` clears it
    disabled_reason text,
    paused_until    timestamptz,              -- the receiver asked us to slow down until then
    reader          text,                     -- the loop that reads the outbox for this sink ...
    reader_until    timestamptz               -- ... holds that lease until then (one at a time)
);

CREATE TABLE tracker.sink_deliveries (
    sink             text NOT NULL REFERENCES tracker.sinks (name) ON DELETE CASCADE,
    event_id         bigint NOT NULL,
    pos              bigint NOT NULL,          -- the event's delivery position (order per message)
    message_id       bigint NOT NULL,
    recorded_at      timestamptz NOT NULL,     -- the event's: delivery latency and age
    body             bytea NOT NULL,           -- exactly what is signed and sent, every attempt
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    claim            text,                     -- who holds the lease (a sink loop's token) ...
    claimed_until    timestamptz,              -- ... until then (not indexed: a claim is a HOT update)
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    last_status      integer,                  -- HTTP status of the last attempt (NULL: no answer)
    last_error       text,                     -- redacted
    dead_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, event_id)
) WITH (fillfactor = 70);  -- room on each page for the claim's in-place (HOT) update
CREATE INDEX sink_deliveries_due ON tracker.sink_deliveries (sink, next_attempt_at, pos)
    WHERE status = 'pending';
CREATE INDEX sink_deliveries_message ON tracker.sink_deliveries (sink, message_id, pos)
    WHERE status = 'pending';
CREATE INDEX sink_deliveries_dead ON tracker.sink_deliveries (sink, recorded_at)
    WHERE status = 'dead';

-- A webhook sink's read: like tracker.read_events (publishing first, as it does), but after
-- `after_pos` when that is beyond the sink's cursor (batches read while earlier ones are still
-- being sent), and with whether each event's message has an event pending for the sink.
CREATE FUNCTION tracker.read_sink_batch(sink text, after_pos bigint, max_events int)
RETURNS TABLE (
    event_id bigint, message_id bigint, vendor text, vendor_ref text, recipient text,
    client_ref text, from_state tracker.state, to_state tracker.state, source tracker.source,
    occurred_at timestamptz, recorded_at timestamptz, failure_code text, failure_reason text,
    failure_permanent boolean, is_correction boolean, pos bigint, message_pending boolean
)
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_read_only') = 'off' THEN
        PERFORM tracker.publish_events();
    END IF;
    RETURN QUERY
    SELECT t.event_id, t.message_id, m.vendor, m.vendor_ref, m.recipient, m.client_ref,
           t.from_state, t.to_state, t.source, t.occurred_at, t.recorded_at,
           t.failure_code, t.failure_reason, t.failure_permanent, t.is_correction, t.pos,
           EXISTS (SELECT FROM tracker.sink_deliveries d
                   WHERE d.sink = read_sink_batch.sink AND d.message_id = t.message_id
                     AND d.status = 'pending')
    FROM tracker.transitions t
    JOIN tracker.messages m ON m.id = t.message_id
    WHERE t.pos > greatest(after_pos, coalesce((SELECT c.acked_pos FROM tracker.consumers c
                                                WHERE c.consumer = 'sink:' || read_sink_batch.sink), 0))
    ORDER BY t.pos
    LIMIT max_events;
END $$;

-- Per sink: where its cursor is, how far behind it is, and how it last fared.
CREATE VIEW tracker.sink_status AS
SELECT s.name AS sink,
       s.kind,
       coalesce(c.acked_pos, 0) AS position,
       greatest(p.last_pos - coalesce(c.acked_pos, 0), 0) + u.unpublished + coalesce(d.pending, 0)
           AS events_behind,  -- committed events not taken yet (numbered or not) and pending ones
       coalesce(d.pending, 0) AS pending,
       coalesce(d.dead, 0) AS dead_letters,
       now() - least(d.oldest_pending, n.recorded_at, u.oldest) AS oldest_undelivered_age,
       s.last_success_at,
       s.last_error,
       s.last_error_at,
       s.disabled_at IS NOT NULL AS disabled,
       s.disabled_at,
       s.disabled_reason,
       CASE WHEN s.paused_until > now() THEN s.paused_until END AS paused_until,
       s.configured_at
FROM tracker.sinks s
CROSS JOIN tracker.event_publisher p
CROSS JOIN (SELECT count(*) AS unpublished, min(recorded_at) AS oldest
            FROM tracker.transitions WHERE pos IS NULL) u
LEFT JOIN tracker.consumers c ON c.consumer = s.consumer
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE x.status = 'pending') AS pending,
           count(*) FILTER (WHERE x.status = 'dead') AS dead,
           min(x.recorded_at) FILTER (WHERE x.status = 'pending') AS oldest_pending
    FROM tracker.sink_deliveries x WHERE x.sink = s.name
) d ON true
LEFT JOIN LATERAL (  -- the first event not yet taken from the outbox
    SELECT t.recorded_at FROM tracker.transitions t
    WHERE t.pos > coalesce(c.acked_pos, 0) ORDER BY t.pos LIMIT 1
) n ON true;

-- Dead letters: events whose retries were used up. `tracker sinks redrive NAME` sends them again.
CREATE VIEW tracker.sink_failures AS
SELECT d.sink,
       d.event_id,
       d.message_id,
       b.body -> 'data' ->> 'vendor' AS vendor,
       b.body -> 'data' ->> 'vendor_ref' AS vendor_ref,
       b.body ->> 'type' AS type,
       d.recorded_at,
       d.attempts,
       d.first_attempt_at,
       d.last_attempt_at,
       d.dead_at,
       d.last_status,
       d.last_error
FROM tracker.sink_deliveries d
CROSS JOIN LATERAL (SELECT convert_from(d.body, 'UTF8')::jsonb AS body) b
WHERE d.status = 'dead';
