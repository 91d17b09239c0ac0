"""The daemon's sweeps, replay and demo; migrations; health (/readyz)."""

# --- the daemon's sweeps, replay, the demo ----------------------------------------------------

# A sweep only one replica at a time runs (Tracker.exclusive): $1 its lock's name. The lock goes
# with the transaction.
TRY_SWEEP_LOCK = "SELECT pg_try_advisory_lock(hashtext($1))"
SWEEP_UNLOCK = "SELECT pg_advisory_unlock(hashtext($1))"

POSTBACKS_TABLE_EXISTS = "SELECT to_regclass('tracker.postbacks') IS NOT NULL"

# A consumer's read and acknowledgement (the contract: tracker.read_events / ack_events).
READ_EVENTS = "SELECT * FROM tracker.read_events($1, $2)"
ACK_EVENTS = "SELECT tracker.ack_events($1, $2)"

# `tracker demo`: the sample application's sends ($1 vendor, $2 client_ref, $3 request, $4
# response), and the summary it prints at the end.
DEMO_SUBMIT = """
INSERT INTO tracker.submissions (vendor, client_ref, request, response)
VALUES ($1, $2, $3::jsonb, $4::jsonb)
"""

DEMO_SUMMARY = """
SELECT vendor, sum(total) total, sum(accepted + sent + submitted) in_flight,
       sum(delivered) delivered, sum(read) read, sum(failed) failed, sum(rejected) rejected,
       sum(expired) expired, sum(unknown) unknown
FROM tracker.delivery_summary GROUP BY 1 ORDER BY 1
"""

COUNT_INTAKE_PROBLEMS = "SELECT count(*) FROM tracker.intake_problems"


# --- migrations --------------------------------------------------------------------------------

TRY_MIGRATION_LOCK = "SELECT pg_try_advisory_lock(hashtext('tracker.migrate'))"
# Who holds it (an advisory lock on one bigint key: objid is its low 32 bits, objsubid 1): its
# pid, application_name and how long its session has been connected; never its query text.
MIGRATION_LOCK_HOLDER = """
SELECT a.pid, a.application_name,
       extract(epoch FROM clock_timestamp() - a.backend_start)::float8 AS connected_s
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.objid = (hashtext('tracker.migrate')::bigint & 4294967295)::oid
LIMIT 1
"""
MIGRATION_UNLOCK = "SELECT pg_advisory_unlock(hashtext('tracker.migrate'))"
CREATE_MIGRATIONS_TABLE = """
CREATE SCHEMA IF NOT EXISTS tracker;
CREATE TABLE IF NOT EXISTS tracker.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
-- the SHA-256 of the file applied (NULL: applied by a release before it was kept). Added once,
-- looked up first: an ALTER at every start would queue behind any session reading the table.
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = 'tracker'
                   AND table_name = 'schema_migrations' AND column_name = 'sha256') THEN
        ALTER TABLE tracker.schema_migrations ADD COLUMN sha256 text;
    END IF;
END $$
"""
APPLIED_MIGRATIONS = "SELECT version FROM tracker.schema_migrations ORDER BY version"
APPLIED_MIGRATION_FILES = "SELECT version, name, sha256 FROM tracker.schema_migrations ORDER BY version"
RECORD_MIGRATION = "INSERT INTO tracker.schema_migrations (version, name, sha256) VALUES ($1, $2, $3)"
# The files' hashes where a release before kept none: taken as those applied (nothing tells).
KEEP_MIGRATION_HASHES = """
UPDATE tracker.schema_migrations s SET sha256 = f.sha256
FROM unnest($1::int[], $2::text[]) AS f(version, sha256)
WHERE s.version = f.version AND s.sha256 IS NULL
"""
RECORD_MENDED_MIGRATION = "UPDATE tracker.schema_migrations SET name = $2, sha256 = $3 WHERE version = $1"
# A file's statements wait this long at most for a lock (then the file is tried again): one
# session's open transaction held every writer queued behind a migration's lock for as long.
MIGRATION_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '5s'"
MIGRATIONS_TABLE_EXISTS = "SELECT to_regclass('tracker.schema_migrations') IS NOT NULL"


# --- health (tracker.supervisor, /readyz) ------------------------------------------------------

# How long the oldest submission row not taken in yet and the oldest stored postback not applied
# yet have waited, in seconds (NULL: none waits), and which row heads the submissions. Two
# lookups in the partial indexes. A row's created_at is the sender's to write: one in the future
# counts as now (the daemon also times how long the same row heads the queue: http.ops.HeadClock),
# and 'infinity' or '-infinity' as a finite time (subtracting them raised, and /readyz blamed the
# database).
OLDEST_WAITING = """
SELECT CASE WHEN h.id IS NOT NULL  -- (least() and greatest() pass over a NULL)
            THEN extract(epoch FROM clock_timestamp() - greatest(least(h.created_at, now()),
                                                                 timestamptz '2000-01-01'))::float8
       END AS intake_s,
       h.id AS intake_head,
       extract(epoch FROM clock_timestamp() - (
           SELECT received_at FROM tracker.postbacks WHERE processed_at IS NULL ORDER BY id LIMIT 1
       ))::float8 AS postbacks_s
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (SELECT id, created_at FROM tracker.submissions
                   WHERE processed_at IS NULL ORDER BY id LIMIT 1) AS h ON true
"""

# When the publisher could not take the publisher row within its lock timeout (tracker.events):
# the committed events waiting unpublished (counted up to $1, through the partial index
# transitions_unpublished) and how long the oldest has waited (seconds; NULL: none), and the
# session that most likely holds the row: of those holding a lock on tracker.event_publisher
# (a row taken FOR UPDATE holds ROW SHARE on the table to the end of the transaction), the one
# whose transaction is oldest. Its pid and application_name
# only: never its query text, which may carry secrets.
PUBLISHER_BLOCKED = """
SELECT (SELECT count(*) FROM (SELECT FROM tracker.transitions WHERE pos IS NULL LIMIT $1) w)
           AS unpublished,
       extract(epoch FROM clock_timestamp() - (
           SELECT recorded_at FROM tracker.transitions WHERE pos IS NULL ORDER BY event_id LIMIT 1
       ))::float8 AS oldest_s,
       h.pid AS holder_pid, h.application_name AS holder_application,
       extract(epoch FROM clock_timestamp() - h.xact_start)::float8 AS holder_xact_s
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT l.pid, a.application_name, a.xact_start
    FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.relation = 'tracker.event_publisher'::regclass
      AND l.granted AND l.pid <> pg_backend_pid()
      AND l.mode IN ('RowShareLock', 'RowExclusiveLock')
    ORDER BY a.xact_start NULLS LAST, l.pid LIMIT 1
) AS h ON true
"""

# How many wait, each counted up to $1: bounded work however large the backlog.
COUNT_WAITING = """
SELECT (SELECT count(*) FROM (SELECT FROM tracker.submissions WHERE processed_at IS NULL LIMIT $1) s)
           AS intake,
       (SELECT count(*) FROM (SELECT FROM tracker.postbacks WHERE processed_at IS NULL LIMIT $1) p)
           AS postbacks
"""

# Every connection of the tracker's, before its first statement (tracker.db.sessions.ids_past_now):
# each id sequence of the schema that is behind the microseconds since 1970 is moved up to them.
# A backup put back, or a standby promoted that missed the primary's last commits, would hand out
# again the ids the lost time had handed out, to other events and messages, and every consumer
# drops those as repeats (webhook-id, Nats-Msg-Id in JetStream's duplicate window, an SQL
# consumer's event_id), in silence. Ids taken at under a million a second stay behind the clock, so
# the first connection after such a restore (the daemon's start, its pools' reconnection after a
# failover, a one-off command) moves them past any id of the lost time, restore after restore of
# the same backup; below 2**53 (exact in JSON) until the year 2255. Only ever forward, one
# connection at a time (the lock: two connections' clocks read in one order and applied in the
# other would move a sequence back under a third's inserts); nothing where writes are refused (a
# standby: a read-only command still runs; the daemon is refused at its first write, as before). One
# simple query, one implicit transaction, one round trip. The application's own sequences, in its
# schemas, are not touched.
IDS_PAST_NOW = """
SELECT pg_advisory_xact_lock(hashtext('tracker.ids'));
SELECT setval(format('%I.%I', s.schemaname, s.sequencename)::regclass, n.us)
FROM pg_sequences s,
     LATERAL (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us) n
WHERE s.schemaname = 'tracker' AND coalesce(s.last_value, 0) < n.us
  AND s.max_value >= n.us  -- an integer sequence of someone's in the schema: left, never refused
  AND current_setting('transaction_read_only') = 'off'  -- a standby: nothing to move, nor may it
"""
