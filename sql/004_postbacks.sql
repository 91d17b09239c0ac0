-- Raw postbacks: every request answered 200 is a row here, committed before the answer.
-- Parsing and the reducer follow in a later transaction (tracker.postbacks worker), which marks
-- the row processed; a row left unprocessed by a crash is taken up again on restart.
-- Never stored: the token in the URL path and any request header but Content-Type.

CREATE TABLE tracker.postbacks (
    id                bigserial PRIMARY KEY,
    vendor            text NOT NULL,          -- from the route
    method            text NOT NULL,          -- GET | POST
    content_type      text NOT NULL DEFAULT '',  -- the Content-Type header as sent
    query             text NOT NULL DEFAULT '',  -- the raw query string
    body              bytea NOT NULL,
    source            inet,                   -- the peer address
    received_at       timestamptz NOT NULL,
    -- Written by the worker (and by `tracker replay`):
    processed_at      timestamptz,            -- parsed and applied through the reducer
    error             text                    -- why it could not be read or applied
    -- What a row produced: tracker.observations with this postback_id.
);
CREATE INDEX postbacks_unprocessed ON tracker.postbacks (id) WHERE processed_at IS NULL;
CREATE INDEX postbacks_vendor_received ON tracker.postbacks (vendor, received_at);
CREATE INDEX postbacks_errors ON tracker.postbacks (id) WHERE error IS NOT NULL;
CREATE INDEX observations_postback ON tracker.observations (postback_id)
    WHERE postback_id IS NOT NULL;

-- Postbacks that never matched: reports still waiting for their message, rows never applied,
-- rows that could not be read or applied. `min_age` leaves the normal race alone (a postback
-- routinely arrives before the sender's insert is taken in).
CREATE FUNCTION tracker.unmatched_postbacks(min_age interval DEFAULT '10 minutes')
RETURNS TABLE (kind text, postback_id bigint, vendor text, vendor_ref text, recipient text,
               problem text, received_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT 'no_message', o.postback_id, o.vendor, o.vendor_ref, nullif(o.recipient_key, ''),
           'no message with this vendor id: ' || coalesce(o.code, '') || ' report', o.received_at
    FROM tracker.observations o
    WHERE o.message_id IS NULL AND o.source = 'postback' AND o.received_at < now() - min_age
    UNION ALL
    SELECT 'not_applied', p.id, p.vendor, NULL, NULL, 'stored but not applied yet', p.received_at
    FROM tracker.postbacks p
    WHERE p.processed_at IS NULL AND p.received_at < now() - min_age
    UNION ALL
    SELECT 'unreadable', p.id, p.vendor, NULL, NULL, p.error, p.received_at
    FROM tracker.postbacks p
    WHERE p.error IS NOT NULL
$$;

CREATE VIEW tracker.postback_problems AS
SELECT * FROM tracker.unmatched_postbacks('10 minutes');
