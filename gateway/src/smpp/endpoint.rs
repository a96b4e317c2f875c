//! Where and how to bind: the vendor endpoint, its credentials and the bind mode.

use smpp_db::Secret;

use crate::smpp::pdu::{BindKind, BindParams, Version};
use crate::smpp::tls::TlsSettings;

/// How a vendor is bound. A TX+RX pair is two binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindMode {
    Transceiver,
    Transmitter,
    Receiver,
    TransmitterAndReceiver,
}

impl BindMode {
    /// Accepts the row's short names and the CR's long names, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        let norm: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | '+' | ' '))
            .collect();
        match norm.to_ascii_lowercase().as_str() {
            "trx" | "transceiver" => Some(Self::Transceiver),
            "tx" | "transmitter" => Some(Self::Transmitter),
            "rx" | "receiver" => Some(Self::Receiver),
            "txrx" | "transmitterandreceiver" | "transmitterreceiver" => {
                Some(Self::TransmitterAndReceiver)
            }
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transceiver => "TRX",
            Self::Transmitter => "TX",
            Self::Receiver => "RX",
            Self::TransmitterAndReceiver => "TX_RX",
        }
    }

    /// Binds per unit of the budget: a TX+RX pair takes two slots.
    pub fn binds_per_unit(self) -> u32 {
        match self {
            Self::TransmitterAndReceiver => 2,
            _ => 1,
        }
    }

    /// The bind kind on `slot`: pairs use even slots for TX and odd slots for RX.
    pub fn kind_for_slot(self, slot: u32) -> BindKind {
        match self {
            Self::Transceiver => BindKind::Transceiver,
            Self::Transmitter => BindKind::Transmitter,
            Self::Receiver => BindKind::Receiver,
            Self::TransmitterAndReceiver if slot.is_multiple_of(2) => BindKind::Transmitter,
            Self::TransmitterAndReceiver => BindKind::Receiver,
        }
    }
}

pub fn parse_version(s: &str) -> Option<Version> {
    match s.trim().to_ascii_lowercase().trim_start_matches('v') {
        "3.4" | "34" | "0x34" => Some(Version::V34),
        "5.0" | "50" | "5" | "0x50" => Some(Version::V50),
        _ => None,
    }
}

/// What a session needs to connect and bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsSettings>,
    pub mode: BindMode,
    pub system_id: String,
    pub password: Secret,
    pub system_type: String,
    pub version: Version,
    pub address_range: String,
}

impl Connection {
    pub fn bind_params(&self, kind: BindKind) -> BindParams {
        BindParams {
            kind,
            system_id: self.system_id.clone(),
            password: self.password.expose().to_string(),
            system_type: self.system_type.clone(),
            version: self.version,
            address_range: self.address_range.clone(),
        }
    }
}
