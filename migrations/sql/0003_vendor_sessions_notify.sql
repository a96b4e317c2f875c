-- The operator mirrors the gateways' bind state into SmppVendor status (BOUND 2/2). Without a
-- signal it only learns of a new bind at its next periodic refresh; this trigger tells it at
-- once. Heartbeat-only updates (every few seconds per slot) do not notify: the WHEN clause
-- keeps them from even running the function.
-- Payload: the vendor_id.
CREATE OR REPLACE FUNCTION vendor_mgmt.notify_vendor_sessions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed uuid;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD.vendor_id; ELSE changed := NEW.vendor_id; END IF;
    PERFORM pg_notify('vendor_mgmt_vendor_sessions', changed::text);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS vendor_sessions_notify_change ON vendor_mgmt.vendor_sessions;
CREATE TRIGGER vendor_sessions_notify_change
    AFTER INSERT OR DELETE ON vendor_mgmt.vendor_sessions
    FOR EACH ROW EXECUTE FUNCTION vendor_mgmt.notify_vendor_sessions();

DROP TRIGGER IF EXISTS vendor_sessions_notify_state ON vendor_mgmt.vendor_sessions;
CREATE TRIGGER vendor_sessions_notify_state
    AFTER UPDATE ON vendor_mgmt.vendor_sessions
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          OR OLD.last_error IS DISTINCT FROM NEW.last_error
          OR OLD.pod IS DISTINCT FROM NEW.pod)
    EXECUTE FUNCTION vendor_mgmt.notify_vendor_sessions();
