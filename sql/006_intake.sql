-- Intake at campaign scale (tracker.intake).

-- When the row reached the database (submitted_at is the sender's to set, and may be anything):
-- how long a row has waited, for /readyz and the intake backlog metrics.
ALTER TABLE tracker.submissions ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();

-- The periodic orphan sweep looks only at recent orphans (tracker.db.reducer.adopt_orphans):
-- old ones, such as reports of messages never sent through this tracker, stay out of its way.
CREATE INDEX observations_orphans_recent ON tracker.observations (received_at)
    WHERE message_id IS NULL;

-- The vendor's id exactly as issued, where it differs from vendor_ref (its normalized form,
-- used for matching): what is shown and sent back to the vendor.
ALTER TABLE tracker.messages ADD COLUMN issued_ref text;

-- Where a message goes (tracker.core.route, at intake: from the recipient with phonenumbers) and
-- the operator where a vendor reports one: the delivery-by-route views group by them.
ALTER TABLE tracker.messages ADD COLUMN country text, ADD COLUMN calling_code integer,
                             ADD COLUMN operator text;
