-- The JetStream stream that acknowledged a NATS sink's events. A daemon that starts and finds
-- that very stream missing from the broker knows it was lost with the events it had taken (a
-- broker's storage wiped) and says so loudly, as it did only within one daemon's life before;
-- a stream renamed in the configuration is another name, and is only made. NULL for webhooks
-- and for a NATS sink that has had nothing acknowledged yet.
ALTER TABLE tracker.sinks ADD COLUMN IF NOT EXISTS acked_stream text;
