-- The intake's look for a new message's orphan reports (queries ADOPT_ORPHANS_OF_MESSAGES: by
-- vendor, id and recipient, through observations_orphans) and the periodic orphan sweep's (by
-- time, through observations_orphans_recent) read two partial indexes of one predicate,
-- `message_id IS NULL`. Where the table's statistics were taken before a campaign's postbacks
-- came in ahead of its submission rows (no orphans then: on a large table autovacuum analyzes
-- again only after a tenth of it has changed), both indexes looked empty and the planner took
-- the smaller, the sweep's: every orphan read for each new message. Intake fell from 14,700 rows
-- a second to 67 (reviewer H, 150,000 orphans); an ANALYZE brought it back. The sweep's index now
-- states a condition the intake's look does not, so that look can only take the right one.
--
-- Building it holds a SHARE lock on tracker.observations (writes of reports wait) for one scan of
-- the table; it cannot be built CONCURRENTLY inside the migration's transaction (as 021).
DROP INDEX tracker.observations_orphans_recent;
CREATE INDEX observations_orphans_recent ON tracker.observations (received_at)
    WHERE message_id IS NULL AND received_at > timestamptz '2000-01-01';
