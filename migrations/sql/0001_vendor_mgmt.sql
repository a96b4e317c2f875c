-- vendor_mgmt schema: vendor rows (service_providers), fleet bind slots (vendor_sessions)
-- and live gateway pods (gateway_pods).
--
-- Existing installations already have service_providers with the legacy columns
-- (id, instance_name, host, port, username, password, system_type, is_active), so every
-- statement here is additive and idempotent: CREATE ... IF NOT EXISTS, ADD COLUMN IF NOT EXISTS.
-- No CHECK constraints on the new columns: a bad hand-written value (unknown bind_mode, port 0)
-- must be reported by the gateway for that vendor alone, not refused for the whole table.

CREATE SCHEMA IF NOT EXISTS vendor_mgmt;

CREATE TABLE IF NOT EXISTS vendor_mgmt.service_providers (
    id            uuid    PRIMARY KEY DEFAULT gen_random_uuid(),
    instance_name text    NOT NULL UNIQUE,
    host          text    NOT NULL,
    port          integer NOT NULL,
    username      text    NOT NULL,
    password      text    NOT NULL DEFAULT '',
    system_type   text    NOT NULL DEFAULT '',
    is_active     boolean NOT NULL DEFAULT true
);

ALTER TABLE vendor_mgmt.service_providers
    ADD COLUMN IF NOT EXISTS tls_enabled                     boolean     NOT NULL DEFAULT false,
    -- SNI and the name verified; NULL means host.
    ADD COLUMN IF NOT EXISTS tls_server_name                 text,
    -- PEM bundle; NULL means the system roots.
    ADD COLUMN IF NOT EXISTS tls_ca_pem                      text,
    ADD COLUMN IF NOT EXISTS tls_client_cert_pem             text,
    ADD COLUMN IF NOT EXISTS tls_client_key_pem              text,
    ADD COLUMN IF NOT EXISTS tls_insecure_skip_verify        boolean     NOT NULL DEFAULT false,
    -- '1.2' or '1.3'
    ADD COLUMN IF NOT EXISTS tls_min_version                 text        NOT NULL DEFAULT '1.2',
    -- 'TRX' | 'TX' | 'RX' | 'TX_RX' (the gateway also accepts the CR's long names)
    ADD COLUMN IF NOT EXISTS bind_mode                       text        NOT NULL DEFAULT 'TRX',
    -- '3.4' | '5.0'
    ADD COLUMN IF NOT EXISTS interface_version               text        NOT NULL DEFAULT '3.4',
    ADD COLUMN IF NOT EXISTS address_range                   text        NOT NULL DEFAULT '',
    -- binds across ALL gateway pods together
    ADD COLUMN IF NOT EXISTS max_binds                       integer     NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS window_size                     integer     NOT NULL DEFAULT 10,
    -- for the vendor across the fleet; NULL means unlimited
    ADD COLUMN IF NOT EXISTS max_messages_per_second         integer,
    ADD COLUMN IF NOT EXISTS enquire_link_interval_seconds   integer     NOT NULL DEFAULT 30,
    ADD COLUMN IF NOT EXISTS reconnect_initial_delay_seconds integer     NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS reconnect_max_delay_seconds     integer     NOT NULL DEFAULT 60,
    ADD COLUMN IF NOT EXISTS routing_priority                integer     NOT NULL DEFAULT 100,
    ADD COLUMN IF NOT EXISTS routing_weight                  integer     NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS routing_prefixes                text[]      NOT NULL DEFAULT '{}',
    -- keep the row, unbind everywhere
    ADD COLUMN IF NOT EXISTS suspended                       boolean     NOT NULL DEFAULT false,
    -- the owning SmppVendor; all NULL for rows managed by hand
    ADD COLUMN IF NOT EXISTS owner_namespace                 text,
    ADD COLUMN IF NOT EXISTS owner_name                      text,
    ADD COLUMN IF NOT EXISTS owner_uid                       text,
    ADD COLUMN IF NOT EXISTS owner_generation                bigint,
    -- bumped by trigger on every change; gateways report which version they run
    ADD COLUMN IF NOT EXISTS config_version                  bigint      NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS updated_at                      timestamptz NOT NULL DEFAULT now();

CREATE OR REPLACE FUNCTION vendor_mgmt.bump_config_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF ROW(NEW.*) IS DISTINCT FROM ROW(OLD.*) THEN
        NEW.config_version := OLD.config_version + 1;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS service_providers_version ON vendor_mgmt.service_providers;
CREATE TRIGGER service_providers_version
    BEFORE UPDATE ON vendor_mgmt.service_providers
    FOR EACH ROW EXECUTE FUNCTION vendor_mgmt.bump_config_version();

-- Payload: {"op":"INSERT|UPDATE|DELETE","id":"<uuid>"}; listeners re-read the row by id.
CREATE OR REPLACE FUNCTION vendor_mgmt.notify_service_providers() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed_id uuid;
BEGIN
    IF TG_OP = 'DELETE' THEN changed_id := OLD.id; ELSE changed_id := NEW.id; END IF;
    PERFORM pg_notify('vendor_mgmt_service_providers',
                      json_build_object('op', TG_OP, 'id', changed_id)::text);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS service_providers_notify ON vendor_mgmt.service_providers;
CREATE TRIGGER service_providers_notify
    AFTER INSERT OR UPDATE OR DELETE ON vendor_mgmt.service_providers
    FOR EACH ROW EXECUTE FUNCTION vendor_mgmt.notify_service_providers();

-- One row per bind slot. Slots 0..max_binds-1 exist per vendor at most, so the primary key
-- is what keeps the whole fleet within the vendor's bind budget.
CREATE TABLE IF NOT EXISTS vendor_mgmt.vendor_sessions (
    vendor_id  uuid        NOT NULL REFERENCES vendor_mgmt.service_providers (id) ON DELETE CASCADE,
    slot       integer     NOT NULL,
    pod        text        NOT NULL,
    -- 'claimed' | 'connecting' | 'bound' | 'backoff' | 'unbinding'
    state      text        NOT NULL DEFAULT 'claimed',
    since      timestamptz NOT NULL DEFAULT now(),
    last_error text,
    heartbeat  timestamptz NOT NULL DEFAULT now(),
    config_version bigint,
    PRIMARY KEY (vendor_id, slot)
);

CREATE INDEX IF NOT EXISTS vendor_sessions_pod ON vendor_mgmt.vendor_sessions (pod);

-- Live gateway pods, so slots can be spread fairly across the fleet.
CREATE TABLE IF NOT EXISTS vendor_mgmt.gateway_pods (
    pod        text        PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat  timestamptz NOT NULL DEFAULT now()
);
