//! SmppVendor spec + resolved Secrets → the service_providers columns, and SmppAccount spec +
//! password hash → the customer_accounts columns. The one place that maps a resource onto its
//! row.

use smpp_crds::{SmppAccount, SmppVendorSpec};
use smpp_db::Secret;
use smpp_db::accounts::AccountConfig;
use smpp_db::providers::ProviderConfig;

/// Values read from the Secrets a vendor references. Debug never shows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Credentials {
    pub password: Secret,
    pub ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<Secret>,
}

/// The row the operator wants for `spec`.
pub fn desired_config(spec: &SmppVendorSpec, creds: &Credentials) -> ProviderConfig {
    ProviderConfig {
        host: spec.host.clone(),
        port: spec.port,
        username: spec.bind.system_id.clone(),
        password: creds.password.clone(),
        system_type: spec.bind.system_type.clone(),
        // suspend keeps the row active for bookkeeping; gateways unbind on `suspended`.
        is_active: true,
        tls_enabled: spec.tls.enabled,
        tls_server_name: spec.tls.server_name.clone(),
        tls_ca_pem: creds.ca_pem.clone(),
        tls_client_cert_pem: creds.client_cert_pem.clone(),
        tls_client_key_pem: creds.client_key_pem.clone(),
        tls_insecure_skip_verify: spec.tls.insecure_skip_verify,
        bind_mode: spec.bind.mode.row_value().to_string(),
        interface_version: spec.bind.interface_version.row_value().to_string(),
        address_range: spec.bind.address_range.clone(),
        max_binds: spec.max_binds,
        window_size: spec.window_size,
        max_messages_per_second: spec.max_messages_per_second,
        enquire_link_interval_seconds: spec.enquire_link_interval_seconds,
        reconnect_initial_delay_seconds: spec.reconnect.initial_delay_seconds,
        reconnect_max_delay_seconds: spec.reconnect.max_delay_seconds,
        routing_priority: spec.routing.priority,
        routing_weight: spec.routing.weight,
        routing_prefixes: spec.routing.prefixes.clone(),
        suspended: spec.suspend,
        message_id_submit_format: spec.messaging.message_ids.submit_resp.as_str().into(),
        message_id_receipt_format: spec.messaging.message_ids.receipt.as_str().into(),
        long_messages: spec.messaging.long_messages.as_str().into(),
        default_alphabet: spec.messaging.default_alphabet.as_str().into(),
    }
}

/// The customer_accounts row the operator wants for `account`. `password_hash` is the
/// argon2id hash of its Secret's password (the password itself never reaches the row).
pub fn desired_account(account: &SmppAccount, password_hash: String) -> AccountConfig {
    let spec = &account.spec;
    AccountConfig {
        system_id: spec.system_id.clone(),
        password_hash,
        allowed_cidrs: spec.allowed_source_cidrs.clone(),
        max_binds: spec.max_binds,
        max_messages_per_second: spec.max_messages_per_second,
        allowed_senders: spec.allowed_senders.clone(),
        allowed_destination_prefixes: spec.allowed_destination_prefixes.clone(),
        route: sqlx::types::Json(account.route_entries()),
        forward_receipts: spec.forward_receipts,
        // suspended keeps the row; gateways refuse binds and close the account's sessions.
        suspended: spec.suspend,
    }
}

/// The columns that differ between two account rows, for the Updated Event (names only: a
/// hash is no one's business either).
pub fn account_changes(old: &AccountConfig, new: &AccountConfig) -> Vec<&'static str> {
    let checks = [
        ("system_id", old.system_id != new.system_id),
        ("password_hash", old.password_hash != new.password_hash),
        ("allowed_cidrs", old.allowed_cidrs != new.allowed_cidrs),
        ("max_binds", old.max_binds != new.max_binds),
        (
            "max_messages_per_second",
            old.max_messages_per_second != new.max_messages_per_second,
        ),
        (
            "allowed_senders",
            old.allowed_senders != new.allowed_senders,
        ),
        (
            "allowed_destination_prefixes",
            old.allowed_destination_prefixes != new.allowed_destination_prefixes,
        ),
        ("route", old.route != new.route),
        (
            "forward_receipts",
            old.forward_receipts != new.forward_receipts,
        ),
        ("suspended", old.suspended != new.suspended),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod account_tests {
    use super::*;
    use smpp_crds::fixtures;
    use smpp_db::accounts::RouteEntry;

    #[test]
    fn maps_every_account_field() {
        let a = fixtures::account("ns", "acme");
        let c = desired_account(&a, "$argon2id$hash".into());
        assert_eq!(c.system_id, "acme");
        assert_eq!(c.password_hash, "$argon2id$hash");
        assert_eq!(c.allowed_cidrs, ["203.0.113.0/24", "2001:db8::/32"]);
        assert_eq!(c.max_binds, 2);
        assert_eq!(c.max_messages_per_second, Some(50));
        assert_eq!(c.allowed_senders, ["ACME"]);
        assert_eq!(c.allowed_destination_prefixes, ["1", "44"]);
        // In order of preference, whatever the order in the manifest.
        assert_eq!(
            c.route.0,
            [
                RouteEntry {
                    vendor: "messaging.sinch-atlanta".into(),
                    priority: 10
                },
                RouteEntry {
                    vendor: "messaging.backup".into(),
                    priority: 20
                },
            ]
        );
        assert!(c.forward_receipts);
        assert!(!c.suspended);
    }

    #[test]
    fn a_minimal_account_writes_the_column_defaults() {
        let spec: smpp_crds::SmppAccountSpec = serde_json::from_value(serde_json::json!({
            "systemId": "min", "passwordSecretRef": {"name": "min-smpp"}
        }))
        .unwrap();
        let c = desired_account(&SmppAccount::new("min", spec), "h".into());
        assert_eq!(c.max_binds, 1);
        assert_eq!(c.max_messages_per_second, None);
        assert!(c.allowed_cidrs.is_empty() && c.allowed_senders.is_empty());
        assert!(c.allowed_destination_prefixes.is_empty());
        assert!(c.route.0.is_empty(), "no route: the default routing");
        assert!(c.forward_receipts && !c.suspended);
    }

    #[test]
    fn suspend_and_changes_are_named_by_column() {
        let a = fixtures::account("ns", "acme");
        let before = desired_account(&a, "h1".into());
        let after = desired_account(&a.clone().suspended().with_max_binds(5), "h2".into());
        assert!(after.suspended);
        assert_eq!(
            account_changes(&before, &after),
            ["password_hash", "max_binds", "suspended"]
        );
        assert!(account_changes(&before, &before).is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smpp_crds::{BindMode, InterfaceVersion, fixtures};

    fn creds() -> Credentials {
        Credentials {
            password: Secret::new("pw"),
            ca_pem: Some("CA".into()),
            client_cert_pem: Some("CERT".into()),
            client_key_pem: Some(Secret::new("KEY")),
        }
    }

    #[test]
    fn maps_every_field() {
        let mut spec = fixtures::spec("s");
        spec.tls.server_name = Some("sni.example".into());
        spec.tls.insecure_skip_verify = true;
        spec.bind.address_range = "^1".into();
        spec.reconnect.initial_delay_seconds = 2;
        spec.reconnect.max_delay_seconds = 30;
        spec.enquire_link_interval_seconds = 15;
        spec.window_size = 7;
        let c = desired_config(&spec, &creds());
        assert_eq!(c.host, "smpp.example.net");
        assert_eq!(c.port, 3601);
        assert_eq!(c.username, "telxMBa1");
        assert_eq!(c.password.expose(), "pw");
        assert_eq!(c.system_type, "ESME");
        assert!(c.is_active);
        assert!(c.tls_enabled);
        assert_eq!(c.tls_server_name.as_deref(), Some("sni.example"));
        assert_eq!(c.tls_ca_pem.as_deref(), Some("CA"));
        assert_eq!(c.tls_client_cert_pem.as_deref(), Some("CERT"));
        assert_eq!(
            c.tls_client_key_pem.as_ref().map(Secret::expose),
            Some("KEY")
        );
        assert!(c.tls_insecure_skip_verify);
        assert_eq!(c.bind_mode, "TRX");
        assert_eq!(c.interface_version, "3.4");
        assert_eq!(c.address_range, "^1");
        assert_eq!(c.max_binds, 2);
        assert_eq!(c.window_size, 7);
        assert_eq!(c.max_messages_per_second, Some(20));
        assert_eq!(c.enquire_link_interval_seconds, 15);
        assert_eq!(c.reconnect_initial_delay_seconds, 2);
        assert_eq!(c.reconnect_max_delay_seconds, 30);
        assert_eq!(c.routing_priority, 100);
        assert_eq!(c.routing_weight, 1);
        assert_eq!(c.routing_prefixes, vec!["1".to_string()]);
        assert!(!c.suspended);
        // The messaging defaults are the column defaults, so a resource that never sets
        // spec.messaging writes what a legacy row already holds.
        assert_eq!(c.message_id_submit_format, "Auto");
        assert_eq!(c.message_id_receipt_format, "Auto");
        assert_eq!(c.long_messages, "Udh");
        assert_eq!(c.default_alphabet, "Gsm7");
    }

    #[test]
    fn maps_messaging_settings() {
        use smpp_crds::{DefaultAlphabet, IdFormat, LongMessages, MessageIdsSpec, MessagingSpec};
        let mut spec = fixtures::spec("s");
        spec.messaging = MessagingSpec {
            message_ids: MessageIdsSpec {
                submit_resp: IdFormat::Hex,
                receipt: IdFormat::Decimal,
            },
            long_messages: LongMessages::Payload,
            default_alphabet: DefaultAlphabet::Latin1,
        };
        let c = desired_config(&spec, &creds());
        assert_eq!(c.message_id_submit_format, "Hex");
        assert_eq!(c.message_id_receipt_format, "Decimal");
        assert_eq!(c.long_messages, "Payload");
        assert_eq!(c.default_alphabet, "Latin1");
    }

    #[test]
    fn bind_modes_versions_and_suspend() {
        for (mode, want) in [
            (BindMode::Transceiver, "TRX"),
            (BindMode::Transmitter, "TX"),
            (BindMode::Receiver, "RX"),
            (BindMode::TransmitterAndReceiver, "TX_RX"),
        ] {
            let mut spec = fixtures::spec("s");
            spec.bind.mode = mode;
            assert_eq!(desired_config(&spec, &creds()).bind_mode, want);
        }
        let mut spec = fixtures::spec("s");
        spec.bind.interface_version = InterfaceVersion::V50;
        spec.suspend = true;
        spec.max_messages_per_second = None;
        let c = desired_config(&spec, &Credentials::default());
        assert_eq!(c.interface_version, "5.0");
        assert!(c.suspended);
        assert_eq!(c.max_messages_per_second, None);
        assert_eq!(c.tls_ca_pem, None);
    }
}
