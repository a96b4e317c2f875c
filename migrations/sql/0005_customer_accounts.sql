-- Customer accounts for the SMPP server (SmppAccount resources) and the fleet's customer
-- binds. The operator writes customer_accounts; the gateways read it, hot-reload it on the
-- NOTIFY below, and hold one account_sessions row per customer bind, so an account's
-- maxBinds holds across the whole fleet.
--
-- Like 0001: additive, idempotent, no CHECK constraints (a bad hand-written row is reported
-- by the gateway for that account alone).

CREATE TABLE IF NOT EXISTS vendor_mgmt.customer_accounts (
    id                      uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- the system_id customers bind with (unique across the fleet)
    system_id               text        NOT NULL UNIQUE,
    -- argon2id PHC string of the bind password; never the password itself
    password_hash           text        NOT NULL,
    -- source networks allowed to bind ('10.0.0.0/8', '192.0.2.7/32', '::1/128'); empty: any
    allowed_cidrs           text[]      NOT NULL DEFAULT '{}',
    -- concurrent binds across the fleet
    max_binds               integer     NOT NULL DEFAULT 1,
    -- submits per second (each part counts); NULL: unlimited
    max_messages_per_second integer,
    -- source_addr values allowed; empty: any
    allowed_senders         text[]      NOT NULL DEFAULT '{}',
    -- destination prefixes (digits) allowed; empty: any
    allowed_destination_prefixes text[] NOT NULL DEFAULT '{}',
    -- vendors this account's traffic may use, by instance_name, in order of preference
    -- ([{"vendor": "...", "priority": 10}]); empty: the default routing
    route                   jsonb       NOT NULL DEFAULT '[]',
    -- send delivery receipts back to the customer as deliver_sm
    forward_receipts        boolean     NOT NULL DEFAULT true,
    -- refuse binds and close the account's sessions
    suspended               boolean     NOT NULL DEFAULT false,
    owner_namespace         text,
    owner_name              text,
    owner_uid               text,
    owner_generation        bigint,
    -- bumped on every change, so the gateways and the operator can tell versions apart
    config_version          bigint      NOT NULL DEFAULT 1,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION vendor_mgmt.customer_accounts_bump() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.config_version := OLD.config_version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS customer_accounts_bump ON vendor_mgmt.customer_accounts;
CREATE TRIGGER customer_accounts_bump
    BEFORE UPDATE ON vendor_mgmt.customer_accounts
    FOR EACH ROW
    WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION vendor_mgmt.customer_accounts_bump();

-- Payload: {"op":"INSERT|UPDATE|DELETE","id":"<uuid>"}, as for service_providers.
CREATE OR REPLACE FUNCTION vendor_mgmt.notify_customer_accounts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed uuid;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD.id; ELSE changed := NEW.id; END IF;
    PERFORM pg_notify('vendor_mgmt_customer_accounts',
        json_build_object('op', TG_OP, 'id', changed)::text);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS customer_accounts_notify ON vendor_mgmt.customer_accounts;
CREATE TRIGGER customer_accounts_notify
    AFTER INSERT OR UPDATE OR DELETE ON vendor_mgmt.customer_accounts
    FOR EACH ROW EXECUTE FUNCTION vendor_mgmt.notify_customer_accounts();

-- One row per customer bind. A slot is free when it has no row or its pod's gateway_pods
-- heartbeat is stale (the pod died); the cascade drops a pod's binds with its row.
CREATE TABLE IF NOT EXISTS vendor_mgmt.account_sessions (
    account_id  uuid        NOT NULL REFERENCES vendor_mgmt.customer_accounts (id) ON DELETE CASCADE,
    slot        integer     NOT NULL,
    pod         text        NOT NULL REFERENCES vendor_mgmt.gateway_pods (pod) ON DELETE CASCADE,
    -- 'TX' | 'RX' | 'TRX'
    bind_type   text        NOT NULL,
    remote_addr text        NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, slot)
);

CREATE INDEX IF NOT EXISTS account_sessions_pod ON vendor_mgmt.account_sessions (pod);

-- Tells the operator at once that an account's binds changed (BOUND in kubectl).
-- Payload: the account_id.
CREATE OR REPLACE FUNCTION vendor_mgmt.notify_account_sessions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed uuid;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD.account_id; ELSE changed := NEW.account_id; END IF;
    PERFORM pg_notify('vendor_mgmt_account_sessions', changed::text);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS account_sessions_notify ON vendor_mgmt.account_sessions;
CREATE TRIGGER account_sessions_notify
    AFTER INSERT OR UPDATE OR DELETE ON vendor_mgmt.account_sessions
    FOR EACH ROW EXECUTE FUNCTION vendor_mgmt.notify_account_sessions();
