//! A service_providers row turned into a validated vendor configuration. Pure: a bad row
//! becomes a per-vendor error, never a panic and never a failure for the other vendors.

use std::time::Duration;

use smpp_db::messaging::{DefaultAlphabet, IdFormat, LongMessages};
use smpp_db::providers::ServiceProvider;
use uuid::Uuid;

use crate::fleet::backoff::Backoff;
use crate::smpp::endpoint::{BindMode, Connection, parse_version};
use crate::smpp::pdu::{self};
use crate::smpp::tls::{MinVersion, TlsSettings};

/// A vendor's validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorConfig {
    pub id: Uuid,
    pub name: String,
    pub version: i64,
    pub conn: Connection,
    pub max_binds: u32,
    pub window: usize,
    /// For the vendor across the fleet; None = unlimited.
    pub max_mps: Option<u32>,
    pub enquire_interval: Duration,
    pub reconnect: Backoff,
    /// How messages are written for the vendor and its ids read. Changes apply in place.
    pub messaging: Messaging,
    pub routing: Routing,
}

/// Where the vendor takes messages (`SmppVendor.spec.routing`). Changes apply in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// Lower first.
    pub priority: i32,
    /// Share among routes of equal prefix length and priority.
    pub weight: u32,
    /// Destination prefixes (digits, no +); empty = every destination.
    pub prefixes: Vec<String>,
}

/// A vendor's messaging settings (`SmppVendor.spec.messaging`), parsed from its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Messaging {
    /// How the vendor writes ids in submit_sm_resp (message_id_submit_format).
    pub submit_ids: IdFormat,
    /// How the vendor writes ids in receipts (message_id_receipt_format).
    pub receipt_ids: IdFormat,
    /// How a long message is split (long_messages).
    pub long_messages: LongMessages,
    /// What data_coding 0 means to the vendor (default_alphabet).
    pub default_alphabet: DefaultAlphabet,
}

/// One messaging column: any letter case of a known value, else an error naming the column
/// and the allowed values.
fn setting<T: Copy + std::fmt::Display>(
    column: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
    all: &[T],
) -> Result<T, String> {
    parse(value).ok_or_else(|| {
        let allowed: Vec<String> = all.iter().map(|v| v.to_string()).collect();
        format!("unknown {column} {value:?} ({})", allowed.join(", "))
    })
}

fn messaging(c: &smpp_db::providers::ProviderConfig) -> Result<Messaging, String> {
    Ok(Messaging {
        submit_ids: setting(
            "message_id_submit_format",
            &c.message_id_submit_format,
            IdFormat::parse,
            IdFormat::ALL,
        )?,
        receipt_ids: setting(
            "message_id_receipt_format",
            &c.message_id_receipt_format,
            IdFormat::parse,
            IdFormat::ALL,
        )?,
        long_messages: setting(
            "long_messages",
            &c.long_messages,
            LongMessages::parse,
            LongMessages::ALL,
        )?,
        default_alphabet: setting(
            "default_alphabet",
            &c.default_alphabet,
            DefaultAlphabet::parse,
            DefaultAlphabet::ALL,
        )?,
    })
}

impl VendorConfig {
    /// Budget units: binds, or TX+RX pairs.
    pub fn units(&self) -> u32 {
        self.max_binds / self.conn.mode.binds_per_unit()
    }

    /// This bind's share of the vendor's TPS. The fleet never holds more than `units` units, so
    /// the shares never add up to more than the vendor allows. Receivers send nothing.
    pub fn tps_per_bind(&self) -> Option<f64> {
        self.max_mps
            .map(|m| f64::from(m) / f64::from(self.units().max(1)))
    }
}

/// One row as the gateway sees it: identified even when its configuration is invalid, so the
/// error is reported for that vendor.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorEntry {
    pub id: Uuid,
    pub name: String,
    pub version: i64,
    /// is_active and not suspended.
    pub active: bool,
    pub config: Result<VendorConfig, String>,
}

fn positive(field: &str, v: i32, min: i32, max: i32) -> Result<i32, String> {
    if v < min || v > max {
        return Err(format!("{field} {v} is out of range {min}..={max}"));
    }
    Ok(v)
}

fn blank(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|v| !v.trim().is_empty()).cloned()
}

pub fn parse(row: &ServiceProvider) -> VendorEntry {
    VendorEntry {
        id: row.id,
        name: row.instance_name.clone(),
        version: row.config_version,
        active: row.config.is_active && !row.config.suspended,
        config: validate(row),
    }
}

fn validate(row: &ServiceProvider) -> Result<VendorConfig, String> {
    let c = &row.config;
    if c.host.trim().is_empty() {
        return Err("host is empty".into());
    }
    let port = positive("port", c.port, 1, 65535)? as u16;
    let mode = BindMode::parse(&c.bind_mode)
        .ok_or_else(|| format!("unknown bind_mode {:?} (TRX, TX, RX or TX_RX)", c.bind_mode))?;
    let version = parse_version(&c.interface_version).ok_or_else(|| {
        format!(
            "unknown interface_version {:?} (3.4 or 5.0)",
            c.interface_version
        )
    })?;
    let max_binds = positive("max_binds", c.max_binds, 0, 1000)? as u32;
    if mode == BindMode::TransmitterAndReceiver && max_binds == 1 {
        return Err("bind_mode TX_RX needs max_binds of at least 2 (a pair is two binds)".into());
    }
    let window = positive("window_size", c.window_size, 1, 100_000)? as usize;
    let max_mps = match c.max_messages_per_second {
        None => None,
        Some(v) => Some(positive("max_messages_per_second", v, 1, 1_000_000)? as u32),
    };
    let enquire = positive(
        "enquire_link_interval_seconds",
        c.enquire_link_interval_seconds,
        1,
        3600,
    )?;
    let initial = positive(
        "reconnect_initial_delay_seconds",
        c.reconnect_initial_delay_seconds,
        0,
        3600,
    )?;
    let max = positive(
        "reconnect_max_delay_seconds",
        c.reconnect_max_delay_seconds,
        0,
        3600,
    )?;
    let messaging = messaging(c)?;
    let routing = Routing {
        priority: c.routing_priority,
        weight: positive("routing_weight", c.routing_weight, 0, 1_000_000)? as u32,
        prefixes: c
            .routing_prefixes
            .iter()
            .map(|p| p.trim().trim_start_matches('+').to_string())
            .filter(|p| !p.is_empty())
            .collect(),
    };
    if let Some(p) = routing
        .prefixes
        .iter()
        .find(|p| !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("routing_prefixes: {p:?} is not a digit prefix"));
    }
    let tls = if c.tls_enabled {
        let min_version = match row.tls_min_version.trim() {
            "" | "1.2" => MinVersion::Tls12,
            "1.3" => MinVersion::Tls13,
            other => return Err(format!("unknown tls_min_version {other:?} (1.2 or 1.3)")),
        };
        let settings = TlsSettings {
            server_name: blank(&c.tls_server_name).unwrap_or_else(|| c.host.trim().to_string()),
            ca_pem: blank(&c.tls_ca_pem),
            client_cert_pem: blank(&c.tls_client_cert_pem),
            client_key_pem: row
                .config
                .tls_client_key_pem
                .as_ref()
                .map(|k| k.expose().to_string())
                .filter(|k| !k.trim().is_empty()),
            insecure_skip_verify: c.tls_insecure_skip_verify,
            min_version,
        };
        Some(settings)
    } else {
        None
    };
    let conn = Connection {
        host: c.host.trim().to_string(),
        port,
        tls,
        mode,
        system_id: c.username.clone(),
        password: c.password.clone(),
        system_type: c.system_type.clone(),
        version,
        address_range: c.address_range.clone(),
    };
    // The PDU module owns the field limits; check them now so a bad row is reported at once.
    pdu::validate_bind(&conn.bind_params(mode.kind_for_slot(0))).map_err(|e| e.to_string())?;
    Ok(VendorConfig {
        id: row.id,
        name: row.instance_name.clone(),
        version: row.config_version,
        conn,
        max_binds,
        window,
        max_mps,
        enquire_interval: Duration::from_secs(enquire as u64),
        reconnect: Backoff::new(
            Duration::from_secs(initial as u64),
            Duration::from_secs(max as u64),
        ),
        messaging,
        routing,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::smpp::endpoint::BindMode;
    use crate::smpp::pdu::{BindKind, Version};
    use smpp_db::Secret;
    use smpp_db::providers::ProviderConfig;

    /// A row as a hand-written INSERT with only the legacy columns leaves it (column defaults).
    pub(crate) fn row(name: &str) -> ServiceProvider {
        ServiceProvider {
            id: Uuid::new_v4(),
            instance_name: name.into(),
            config: ProviderConfig {
                host: "127.0.0.1".into(),
                port: 2775,
                username: "smppclient1".into(),
                password: Secret::new("password"),
                system_type: String::new(),
                is_active: true,
                tls_enabled: false,
                tls_server_name: None,
                tls_ca_pem: None,
                tls_client_cert_pem: None,
                tls_client_key_pem: None,
                tls_insecure_skip_verify: false,
                bind_mode: "TRX".into(),
                interface_version: "3.4".into(),
                address_range: String::new(),
                max_binds: 1,
                window_size: 10,
                max_messages_per_second: None,
                enquire_link_interval_seconds: 30,
                reconnect_initial_delay_seconds: 1,
                reconnect_max_delay_seconds: 60,
                routing_priority: 100,
                routing_weight: 1,
                routing_prefixes: vec![],
                suspended: false,
                message_id_submit_format: "Auto".into(),
                message_id_receipt_format: "Auto".into(),
                long_messages: "Udh".into(),
                default_alphabet: "Gsm7".into(),
            },
            tls_min_version: "1.2".into(),
            owner_namespace: None,
            owner_name: None,
            owner_uid: None,
            owner_generation: None,
            owner_fingerprint: None,
            config_version: 1,
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn legacy_row_is_valid_with_defaults() {
        let e = parse(&row("legacy"));
        let c = e.config.unwrap();
        assert_eq!(c.conn.mode, BindMode::Transceiver);
        assert_eq!(c.conn.version, Version::V34);
        assert_eq!(c.conn.tls, None);
        assert_eq!(c.units(), 1);
        assert!(e.active);
        assert_eq!(
            c.messaging,
            Messaging {
                submit_ids: IdFormat::Auto,
                receipt_ids: IdFormat::Auto,
                long_messages: LongMessages::Udh,
                default_alphabet: DefaultAlphabet::Gsm7,
            }
        );
        assert_eq!(c.messaging, Messaging::default());
    }

    #[test]
    fn messaging_columns_parse_in_any_case() {
        let mut r = row("messaging");
        r.config.message_id_submit_format = "hex".into();
        r.config.message_id_receipt_format = " DECIMAL ".into();
        r.config.long_messages = "sar".into();
        r.config.default_alphabet = "latin1".into();
        let m = parse(&r).config.unwrap().messaging;
        assert_eq!(m.submit_ids, IdFormat::Hex);
        assert_eq!(m.receipt_ids, IdFormat::Decimal);
        assert_eq!(m.long_messages, LongMessages::Sar);
        assert_eq!(m.default_alphabet, DefaultAlphabet::Latin1);
        r.config.message_id_submit_format = "AsIs".into();
        r.config.long_messages = "Payload".into();
        r.config.default_alphabet = "Ascii".into();
        let m = parse(&r).config.unwrap().messaging;
        assert_eq!(m.submit_ids, IdFormat::AsIs);
        assert_eq!(m.long_messages, LongMessages::Payload);
        assert_eq!(m.default_alphabet, DefaultAlphabet::Ascii);
    }

    #[test]
    fn unknown_messaging_value_names_column_and_allowed_values() {
        type Set = fn(&mut ServiceProvider);
        let cases: [(Set, &str, &str); 4] = [
            (
                |r| r.config.message_id_submit_format = "octal".into(),
                "unknown message_id_submit_format \"octal\"",
                "(Auto, AsIs, Decimal, Hex)",
            ),
            (
                |r| r.config.message_id_receipt_format = "".into(),
                "unknown message_id_receipt_format \"\"",
                "(Auto, AsIs, Decimal, Hex)",
            ),
            (
                |r| r.config.long_messages = "udh8".into(),
                "unknown long_messages \"udh8\"",
                "(Udh, Sar, Payload)",
            ),
            (
                |r| r.config.default_alphabet = "utf8".into(),
                "unknown default_alphabet \"utf8\"",
                "(Gsm7, Latin1, Ascii)",
            ),
        ];
        for (set, column, allowed) in cases {
            let mut r = row("bad-messaging");
            set(&mut r);
            let e = parse(&r);
            assert!(
                e.active,
                "the row still loads and is reported for that vendor"
            );
            let err = e.config.unwrap_err();
            assert!(err.contains(column), "{err}");
            assert!(err.contains(allowed), "{err}");
        }
    }

    #[test]
    fn bind_modes_short_long_any_case() {
        for (s, m) in [
            ("TRX", BindMode::Transceiver),
            ("trx", BindMode::Transceiver),
            ("Transceiver", BindMode::Transceiver),
            ("tx", BindMode::Transmitter),
            ("Transmitter", BindMode::Transmitter),
            ("RX", BindMode::Receiver),
            ("receiver", BindMode::Receiver),
            ("TX_RX", BindMode::TransmitterAndReceiver),
            ("tx+rx", BindMode::TransmitterAndReceiver),
            ("TransmitterAndReceiver", BindMode::TransmitterAndReceiver),
        ] {
            assert_eq!(BindMode::parse(s), Some(m), "{s}");
        }
        assert_eq!(BindMode::parse("bogus"), None);
    }

    #[test]
    fn bad_rows_are_errors_for_that_vendor() {
        let mut r = row("bad-port");
        r.config.port = 70000;
        assert!(parse(&r).config.unwrap_err().contains("port 70000"));
        let mut r = row("bad-mode");
        r.config.bind_mode = "XYZ".into();
        assert!(parse(&r).config.unwrap_err().contains("unknown bind_mode"));
        let mut r = row("bad-version");
        r.config.interface_version = "4.0".into();
        assert!(parse(&r).config.is_err());
        let mut r = row("long-password");
        r.config.password = Secret::new("123456789");
        let err = parse(&r).config.unwrap_err();
        assert!(
            err.contains("password") && !err.contains("123456789"),
            "{err}"
        );
        let mut r = row("pair-of-one");
        r.config.bind_mode = "TX_RX".into();
        assert!(parse(&r).config.is_err());
    }

    #[test]
    fn inactive_and_suspended() {
        let mut r = row("off");
        r.config.is_active = false;
        assert!(!parse(&r).active);
        let mut r = row("suspended");
        r.config.suspended = true;
        assert!(!parse(&r).active);
    }

    #[test]
    fn tls_defaults_sni_to_host_and_pairs_use_two_slots() {
        let mut r = row("tls");
        r.config.tls_enabled = true;
        r.config.host = "smpp.example.net".into();
        r.config.bind_mode = "TX_RX".into();
        r.config.max_binds = 4;
        r.config.max_messages_per_second = Some(20);
        let c = parse(&r).config.unwrap();
        assert_eq!(c.conn.tls.as_ref().unwrap().server_name, "smpp.example.net");
        assert_eq!(c.units(), 2);
        assert_eq!(c.tps_per_bind(), Some(10.0));
        assert_eq!(c.conn.mode.kind_for_slot(2), BindKind::Transmitter);
        assert_eq!(c.conn.mode.kind_for_slot(3), BindKind::Receiver);
    }
}
