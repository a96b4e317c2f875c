-- The operator records a fingerprint of the configuration it last wrote to a row it owns.
-- On resync it fingerprints the row as it is now: a mismatch means someone edited the row
-- by hand (drift, reverted and reported), while a match with a stale fingerprint means the
-- resource or its Secrets changed (an ordinary update). NULL for rows managed by hand.
ALTER TABLE vendor_mgmt.service_providers
    ADD COLUMN IF NOT EXISTS owner_fingerprint text;
