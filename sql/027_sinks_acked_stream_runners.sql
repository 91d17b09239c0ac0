-- The JetStream stream that acknowledged a NATS sink's events. A daemon that starts and finds
-- that very stream missing from the broker knows it was lost with the events it had taken (a
-- broker's storage wiped) and says so loudly, as it did only within one daemon's life before;
-- a stream renamed in the configuration is another name, and is only made. NULL for webhooks
-- and for a NATS sink that has had nothing acknowledged yet.
ALTER TABLE tracker.sinks ADD COLUMN IF NOT EXISTS acked_stream text;

-- The daemons running each sink now (`tracker sinks forget` refuses a sink one of them runs).
-- Every daemon's sinks component writes its row per configured sink every few seconds
-- (tracker.sinks.store.SEEN_EVERY_S), whatever its loops are doing (idle, disabled by a 410,
-- backing off from a broker that is down), and removes its rows when it stops; a daemon
-- killed without stopping is taken as running until its rows are SEEN_FRESH_S old. One row per
-- daemon, not one column per sink: a replica that stops must not clear what another still
-- writes. The heartbeat locks the sink's row FOR KEY SHARE and forget locks it FOR UPDATE, so a
-- forget that has looked and found no daemon deletes before any daemon can write again.
CREATE TABLE IF NOT EXISTS tracker.sink_runners (
    sink    text NOT NULL REFERENCES tracker.sinks (name) ON DELETE CASCADE,
    runner  text NOT NULL,                     -- a daemon's start: host, pid and a token
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, runner)
);
