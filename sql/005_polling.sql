-- Polling (docs/polling.md): per-vendor claims, the poller's counters, and tracker.vendor_health.

-- Each vendor's poll loop claims its own due messages: (vendor, next_poll_at) lets it find them
-- without walking past the other vendors' due rows. Like messages_due, which it replaces (one
-- index fewer to write on every poll), it holds only the rows still polled.
CREATE INDEX messages_due_by_vendor ON tracker.messages (vendor, next_poll_at)
    WHERE next_poll_at IS NOT NULL;
DROP INDEX tracker.messages_due;

-- Room on each page for claims (lease_owner/lease_until, no indexed column) to be HOT updates.
ALTER TABLE tracker.messages SET (fillfactor = 85);

-- Counters of each poller replica, per vendor, added to in batches (every few seconds), never
-- per request. A replica that stops leaves its row: the counts are history; its circuit state
-- stops counting once the row is no longer refreshed.
CREATE TABLE tracker.poll_stats (
    vendor          text NOT NULL,
    replica         text NOT NULL,            -- host/pid/random of the poller
    polls_ok        bigint NOT NULL DEFAULT 0,  -- status calls answered and read
    polls_failed    bigint NOT NULL DEFAULT 0,  -- timeouts, 5xx, 429, malformed, account errors
    last_success_at timestamptz,
    last_error_at   timestamptz,
    last_error      text,                     -- the kind of failure, never a request or secret
    circuit_state   text NOT NULL DEFAULT 'closed'
                    CHECK (circuit_state IN ('closed', 'open', 'half_open')),
    circuit_since   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    stopped_at      timestamptz,              -- the replica stopped cleanly
    PRIMARY KEY (vendor, replica)
);

-- Per vendor: poll successes and errors, last success, circuit state (the worst among running
-- replicas that reported in the last two minutes; NULL when none polls the vendor), and the
-- vendor codes seen that we do not map (from any source: polls and postbacks).
CREATE VIEW tracker.vendor_health AS
WITH vendors AS (
    SELECT vendor FROM tracker.vendor_settings
    UNION
    SELECT vendor FROM tracker.poll_stats
), stats AS (
    SELECT vendor,
           sum(polls_ok) AS polls_ok,
           sum(polls_failed) AS polls_failed,
           max(last_success_at) AS last_success_at,
           max(last_error_at) AS last_error_at,
           (array_agg(last_error ORDER BY last_error_at DESC NULLS LAST))[1] AS last_error,
           max(CASE circuit_state WHEN 'open' THEN 2 WHEN 'half_open' THEN 1 ELSE 0 END)
               FILTER (WHERE stopped_at IS NULL AND updated_at > now() - interval '2 minutes')
               AS circuit_rank,
           count(*) FILTER (WHERE stopped_at IS NULL AND updated_at > now() - interval '2 minutes')
               AS polling_replicas
    FROM tracker.poll_stats
    GROUP BY vendor
), unmapped AS (
    SELECT vendor, count(*) AS unmapped_reports,
           (array_agg(DISTINCT code ORDER BY code))[1:20] AS unmapped_codes
    FROM tracker.observations
    WHERE state IS NULL
    GROUP BY vendor
)
SELECT v.vendor,
       coalesce(s.polls_ok, 0) AS poll_successes,
       coalesce(s.polls_failed, 0) AS poll_errors,
       s.last_success_at,
       s.last_error_at,
       s.last_error,
       CASE s.circuit_rank WHEN 2 THEN 'open' WHEN 1 THEN 'half_open' WHEN 0 THEN 'closed' END
           AS circuit_state,
       coalesce(s.polling_replicas, 0) AS polling_replicas,
       coalesce(u.unmapped_reports, 0) AS unmapped_reports,
       coalesce(u.unmapped_codes, '{}') AS unmapped_codes
FROM vendors v
LEFT JOIN stats s ON s.vendor = v.vendor
LEFT JOIN unmapped u ON u.vendor = v.vendor;
