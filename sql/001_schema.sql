-- The tracker's tables. Everything lives in schema `tracker` so it can share a database with the
-- application that sends the messages.

CREATE TYPE tracker.state AS ENUM (
    'submitted', 'accepted', 'sent', 'unknown', 'expired', 'rejected', 'failed', 'delivered', 'read'
);  -- declared in rank order: comparisons and max() follow the rank

CREATE TYPE tracker.source AS ENUM ('submit', 'poll', 'postback', 'tracker');

-- Intake: one row per send call, written by the sending application.
CREATE TABLE tracker.submissions (
    id            bigserial PRIMARY KEY,
    vendor        text NOT NULL,
    client_ref    text,
    submitted_at  timestamptz NOT NULL DEFAULT now(),
    vendor_ref    text,
    recipient     text,
    response      jsonb,
    request       jsonb,
    -- Written by the tracker:
    processed_at  timestamptz,          -- taken in (or refused, then error says why)
    error         text,                 -- why the row could not be taken in
    waiting       text,                 -- why the row is not taken in yet (it will be retried)
    note          text,                 -- taken in, but the vendor also reported an account problem
    message_count integer
);
CREATE INDEX submissions_unprocessed ON tracker.submissions (id) WHERE processed_at IS NULL;

CREATE FUNCTION tracker.notify_intake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tracker_intake', '');
    RETURN NULL;
END $$;
CREATE TRIGGER submissions_notify AFTER INSERT ON tracker.submissions
    FOR EACH STATEMENT EXECUTE FUNCTION tracker.notify_intake();

-- One row per tracked message. recipient_key is the recipient where the vendor's id covers a
-- batch (Sparrow), '' otherwise, so that one unique key serves every vendor.
CREATE TABLE tracker.messages (
    id                bigserial PRIMARY KEY,
    vendor            text NOT NULL,
    vendor_ref        text NOT NULL,
    recipient_key     text NOT NULL DEFAULT '',
    recipient         text,
    client_ref        text,
    submission_id     bigint REFERENCES tracker.submissions (id),
    state             tracker.state NOT NULL DEFAULT 'submitted',
    submitted_at      timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),  -- last state change
    last_report_at    timestamptz,                         -- last report of any rank
    delivered_at      timestamptz,
    failure_code      text,
    failure_reason    text,
    failure_permanent boolean,
    vendor_deadline   timestamptz,  -- the vendor retries until then (engageSPARK)
    window_ends_at    timestamptz,  -- tracking window: not final by then -> unknown
    next_poll_at      timestamptz,  -- NULL: not polled (final, or a push-only vendor)
    poll_count        integer NOT NULL DEFAULT 0,
    lease_owner       text,
    lease_until       timestamptz,
    UNIQUE (vendor, vendor_ref, recipient_key)
);
CREATE INDEX messages_due ON tracker.messages (next_poll_at) WHERE next_poll_at IS NOT NULL;
CREATE INDEX messages_open_window ON tracker.messages (window_ends_at)
    WHERE state < 'unknown';
CREATE INDEX messages_client_ref ON tracker.messages (client_ref) WHERE client_ref IS NOT NULL;

-- Every report from every source, append-only. message_id is NULL while the report waits for
-- its message to appear (postbacks race the sender's insert).
CREATE TABLE tracker.observations (
    id                bigserial PRIMARY KEY,
    message_id        bigint REFERENCES tracker.messages (id),
    vendor            text NOT NULL,
    vendor_ref        text NOT NULL,
    recipient_key     text NOT NULL DEFAULT '',
    source            tracker.source NOT NULL,
    state             tracker.state,   -- NULL: the vendor's code is not in our mapping
    code              text,
    text              text,
    event_at          timestamptz,
    received_at       timestamptz NOT NULL DEFAULT now(),
    failure_code      text,
    failure_reason    text,
    failure_permanent boolean,
    raw               jsonb,
    postback_id       bigint
);
CREATE INDEX observations_message ON tracker.observations (message_id, id);
CREATE INDEX observations_orphans ON tracker.observations (vendor, vendor_ref, recipient_key)
    WHERE message_id IS NULL;
CREATE INDEX observations_unmapped ON tracker.observations (vendor, code)
    WHERE state IS NULL;

-- The outbox: one row per real state change, written in the transaction that made it.
-- pos is the delivery position, given after commit by tracker.publish_events() (see 002).
CREATE TABLE tracker.transitions (
    event_id          bigserial PRIMARY KEY,
    message_id        bigint NOT NULL REFERENCES tracker.messages (id),
    from_state        tracker.state NOT NULL,
    to_state          tracker.state NOT NULL,
    source            tracker.source NOT NULL,
    occurred_at       timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    failure_code      text,
    failure_reason    text,
    failure_permanent boolean,
    is_correction     boolean NOT NULL DEFAULT false,
    observation_id    bigint,
    pos               bigint UNIQUE,
    CHECK (to_state > from_state)
);
CREATE INDEX transitions_message ON tracker.transitions (message_id, event_id);
CREATE INDEX transitions_unpublished ON tracker.transitions (event_id) WHERE pos IS NULL;

-- Per-vendor facts the views need, written by the daemon from its configuration.
CREATE TABLE tracker.vendor_settings (
    vendor           text PRIMARY KEY,
    expected_final_s double precision NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
