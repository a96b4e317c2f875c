-- Vendor messaging settings (SmppVendor.spec.messaging) and the address each gateway pod
-- advertises, so a pod with no bound session for a vendor can forward a submit to one that has.
--
-- Additive and idempotent like 0001: a default on every column, so hand-written INSERTs with
-- only the legacy columns keep working; no CHECK constraints, so an unknown value is reported
-- by the gateway for that vendor alone (values: smpp_db::messaging, any letter case).

ALTER TABLE vendor_mgmt.service_providers
    -- how the vendor writes ids in submit_sm_resp: 'Auto' | 'AsIs' | 'Decimal' | 'Hex'
    ADD COLUMN IF NOT EXISTS message_id_submit_format  text NOT NULL DEFAULT 'Auto',
    -- how the vendor writes ids in delivery receipts: 'Auto' | 'AsIs' | 'Decimal' | 'Hex'
    ADD COLUMN IF NOT EXISTS message_id_receipt_format text NOT NULL DEFAULT 'Auto',
    -- 'Udh' | 'Sar' | 'Payload'
    ADD COLUMN IF NOT EXISTS long_messages             text NOT NULL DEFAULT 'Udh',
    -- what data_coding 0 means to the vendor: 'Gsm7' | 'Latin1' | 'Ascii'
    ADD COLUMN IF NOT EXISTS default_alphabet          text NOT NULL DEFAULT 'Gsm7';

-- host:port where the pod's HTTP API is reachable by the other pods (--advertise-addr);
-- NULL when the pod does not accept forwarded requests.
ALTER TABLE vendor_mgmt.gateway_pods
    ADD COLUMN IF NOT EXISTS advertise_addr text;
