-- Views: how operators and applications ask questions.

CREATE VIEW tracker.message_status AS
SELECT m.id AS message_id, m.vendor, m.vendor_ref, m.recipient, m.client_ref, m.state,
       m.state >= 'unknown' AS is_final,
       m.submitted_at, m.updated_at, m.delivered_at,
       m.failure_code, m.failure_reason, m.failure_permanent,
       m.last_report_at, m.next_poll_at, m.window_ends_at, m.vendor_deadline, m.submission_id
FROM tracker.messages m;

CREATE VIEW tracker.message_history AS
SELECT t.message_id, t.event_id, t.from_state, t.to_state, t.source, t.occurred_at, t.recorded_at,
       t.failure_code, t.failure_reason, t.is_correction
FROM tracker.transitions t;

CREATE VIEW tracker.delivery_summary AS
SELECT m.vendor,
       (m.submitted_at AT TIME ZONE 'UTC')::date AS day,
       count(*) AS total,
       count(*) FILTER (WHERE m.state = 'submitted') AS submitted,
       count(*) FILTER (WHERE m.state = 'accepted')  AS accepted,
       count(*) FILTER (WHERE m.state = 'sent')      AS sent,
       count(*) FILTER (WHERE m.state = 'unknown')   AS unknown,
       count(*) FILTER (WHERE m.state = 'expired')   AS expired,
       count(*) FILTER (WHERE m.state = 'rejected')  AS rejected,
       count(*) FILTER (WHERE m.state = 'failed')    AS failed,
       count(*) FILTER (WHERE m.state = 'delivered') AS delivered,
       count(*) FILTER (WHERE m.state = 'read')      AS read,
       round(count(*) FILTER (WHERE m.state >= 'delivered')::numeric / count(*), 4)
           AS delivered_ratio
FROM tracker.messages m
GROUP BY 1, 2;

CREATE VIEW tracker.delivery_latency AS
SELECT m.vendor,
       (m.submitted_at AT TIME ZONE 'UTC')::date AS day,
       count(*) AS delivered,
       percentile_cont(0.5)  WITHIN GROUP (ORDER BY extract(epoch FROM m.delivered_at - m.submitted_at))
           AS p50_s,
       percentile_cont(0.9)  WITHIN GROUP (ORDER BY extract(epoch FROM m.delivered_at - m.submitted_at))
           AS p90_s,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM m.delivered_at - m.submitted_at))
           AS p99_s
FROM tracker.messages m
WHERE m.delivered_at IS NOT NULL
GROUP BY 1, 2;

-- Not final, and silent (no report of any kind) for longer than the vendor is expected to take.
-- Vendors the daemon has not configured yet fall back to one hour.
CREATE VIEW tracker.stuck_messages AS
SELECT m.id AS message_id, m.vendor, m.vendor_ref, m.recipient, m.client_ref, m.state,
       m.submitted_at, coalesce(m.last_report_at, m.submitted_at) AS last_heard_at,
       now() - coalesce(m.last_report_at, m.submitted_at) AS silent_for,
       m.next_poll_at, m.window_ends_at
FROM tracker.messages m
LEFT JOIN tracker.vendor_settings v ON v.vendor = m.vendor
WHERE m.state < 'unknown'
  AND coalesce(m.last_report_at, m.submitted_at)
      < now() - make_interval(secs => coalesce(v.expected_final_s, 3600));

-- Intake rows that were refused, are still waiting, or came with an account problem; and
-- reports that match no message.
CREATE VIEW tracker.intake_problems AS
SELECT CASE WHEN s.error IS NULL AND s.waiting IS NULL THEN 'submission_note'
            ELSE 'submission' END AS kind,
       s.id, s.vendor, s.vendor_ref, s.recipient,
       coalesce(s.error, s.waiting, s.note) AS problem, s.waiting IS NULL AS is_final,
       s.submitted_at AS at
FROM tracker.submissions s
WHERE s.error IS NOT NULL OR s.waiting IS NOT NULL OR s.note IS NOT NULL
UNION ALL
SELECT 'orphan_report', o.id, o.vendor, o.vendor_ref, nullif(o.recipient_key, ''),
       'no message with this vendor id (yet): ' || o.source || ' report ' || coalesce(o.code, ''),
       false, o.received_at
FROM tracker.observations o
WHERE o.message_id IS NULL;
