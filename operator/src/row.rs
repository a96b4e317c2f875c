//! SmppVendor spec + resolved Secrets → the service_providers columns. The one place that
//! maps the resource onto the row.

use smpp_crds::SmppVendorSpec;
use smpp_db::Secret;
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
