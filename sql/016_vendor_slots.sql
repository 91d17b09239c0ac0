-- A vendor's concurrency holds for the whole deployment, exactly (docs/polling.md#limits). It
-- replaces the share of sql/012 (concurrency / replicas, rounded up: 3 replicas of a vendor
-- allowed 4 requests at once ran 6).
--
-- The vendor's `concurrency` is that many slots, rows (vendor, slot) with slot in
-- 0 .. concurrency - 1; the slot is the key, so no two replicas ever hold the same one. A
-- replica runs at most as many polls of the vendor at once as it holds slots, under a lease it
-- renews every few seconds (tracker.poller.slot_leases, q.HOLD_SLOTS); it stops using them,
-- by its own clock, before the lease ends, so a slot whose lease has ended is free to take.
-- A replica that stops gives its slots back (replica and lease_until NULL). Rows are made as
-- slots are first taken.

CREATE TABLE tracker.vendor_slots (
    vendor      text NOT NULL,
    slot        int NOT NULL CHECK (slot >= 0),
    replica     text,         -- host/pid/random of the poller holding it; NULL: free
    lease_until timestamptz,  -- past: free to take
    PRIMARY KEY (vendor, slot),
    CHECK ((replica IS NULL) = (lease_until IS NULL))
);
