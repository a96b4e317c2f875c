//! Why a bind failed, in words a person can act on. Every failure gets the stage it reached,
//! a stable reason code (used as a metrics label and at the start of `last_error`), a message
//! and the likely causes. Pure: the session layer hands over what it observed, nothing here
//! touches the network. A bare "EOF" is never an answer.

use std::borrow::Cow;
use std::fmt;

use crate::smpp::connection::ConnectError;

/// How far a bind attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The row could not be turned into a bind (bad port, unknown mode, field too long).
    Config,
    Dns,
    Tcp,
    Tls,
    /// Connected (and TLS done); bind sent, waiting for bind_resp.
    Bind,
    /// bind_resp received with an error status.
    BindResp,
    /// Was bound; the session ended.
    Session,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Config => "config",
            Stage::Dns => "dns",
            Stage::Tcp => "tcp",
            Stage::Tls => "tls",
            Stage::Bind => "bind",
            Stage::BindResp => "bind_resp",
            Stage::Session => "session",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BindFailure {
    pub stage: Stage,
    /// Stable, lower-case code: `tls_unknown_ca`, `bind_esme_rinvpaswd`, …
    pub reason: Reason,
    pub message: String,
    pub likely_causes: Vec<String>,
}

impl fmt::Display for BindFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)?;
        if !self.likely_causes.is_empty() {
            write!(f, ". Likely causes: {}", self.likely_causes.join("; "))?;
        }
        Ok(())
    }
}

impl std::error::Error for BindFailure {}

fn failure(
    stage: Stage,
    reason: Reason,
    message: impl Into<String>,
    causes: &[&str],
) -> BindFailure {
    BindFailure {
        stage,
        reason,
        message: message.into(),
        likely_causes: causes.iter().map(|c| c.to_string()).collect(),
    }
}

pub fn config_error(message: impl Into<String>) -> BindFailure {
    failure(
        Stage::Config,
        Reason::ConfigInvalid,
        message,
        &[
            "the vendor row has a value the gateway cannot use; fix the row (or the SmppVendor spec)",
        ],
    )
}

/// DNS, TCP and TLS failures.
pub fn classify_connect(e: &ConnectError) -> BindFailure {
    match e {
        ConnectError::Dns { .. } | ConnectError::DnsEmpty { .. } => failure(
            Stage::Dns,
            Reason::DnsFailed,
            e.to_string(),
            &[
                "the host name is misspelled",
                "the cluster DNS cannot resolve the vendor's name (private zone, egress DNS policy)",
            ],
        ),
        ConnectError::DnsTimeout { .. } => failure(
            Stage::Dns,
            Reason::DnsTimeout,
            e.to_string(),
            &["the DNS server does not answer (network policy, resolver down)"],
        ),
        ConnectError::TcpRefused { .. } => failure(
            Stage::Tcp,
            Reason::TcpRefused,
            e.to_string(),
            &[
                "wrong port",
                "the vendor's SMPP server is down",
                "TLS and plain ports mixed up",
            ],
        ),
        ConnectError::TcpTimeout { .. } => failure(
            Stage::Tcp,
            Reason::TcpTimeout,
            e.to_string(),
            &[
                "a firewall drops the packets: the vendor has not allow-listed our egress IP, or our egress policy blocks the port",
                "wrong host or port",
            ],
        ),
        ConnectError::Tcp { .. } => failure(
            Stage::Tcp,
            Reason::TcpFailed,
            e.to_string(),
            &["no route to the vendor (network, egress policy)"],
        ),
        ConnectError::TlsTimeout { .. } => failure(
            Stage::Tls,
            Reason::TlsTimeout,
            e.to_string(),
            &[
                "the port speaks plain SMPP, not TLS: turn TLS off or use the TLS port",
                "a middlebox swallows the handshake",
            ],
        ),
        ConnectError::Tls { addr, source } => classify_tls(&addr.to_string(), source),
    }
}

fn classify_tls(addr: &str, source: &std::io::Error) -> BindFailure {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E, PeerIncompatible as P};
    let inner = source.get_ref().and_then(|i| i.downcast_ref::<E>());
    let at = |what: String| format!("TLS handshake with {addr} failed: {what}");
    let Some(err) = inner else {
        return match source.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => failure(
                Stage::Tls,
                Reason::TlsPeerClosed,
                at("the peer closed the connection during the handshake".into()),
                &[
                    "the port speaks plain SMPP, not TLS",
                    "the vendor's TLS front end refuses our source IP (not allow-listed yet)",
                    "the vendor requires a client certificate or a TLS version we did not offer",
                ],
            ),
            _ => failure(
                Stage::Tls,
                Reason::TlsFailed,
                at(source.to_string()),
                &["network error during the handshake"],
            ),
        };
    };
    match err {
        E::InvalidCertificate(C::UnknownIssuer) => failure(
            Stage::Tls,
            Reason::TlsUnknownCa,
            at("the server certificate was issued by a CA we do not trust".into()),
            &[
                "set the vendor's CA bundle (spec.tls.caSecretRef / tls_ca_pem)",
                "the vendor serves an incomplete chain (missing intermediate)",
            ],
        ),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => failure(
            Stage::Tls,
            Reason::TlsNameMismatch,
            at(format!(
                "the server certificate is not valid for the name we verify ({})",
                describe_cert_error(err)
            )),
            &[
                "set spec.tls.serverName (tls_server_name) to a name in the certificate",
                "connecting by IP address to a certificate issued for a host name",
            ],
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => failure(
            Stage::Tls,
            Reason::TlsCertExpired,
            at("the server certificate has expired".into()),
            &[
                "the vendor must renew its certificate",
                "our clock is wrong",
            ],
        ),
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => failure(
            Stage::Tls,
            Reason::TlsCertNotYetValid,
            at("the server certificate is not valid yet".into()),
            &[
                "our clock is behind",
                "the vendor deployed a certificate too early",
            ],
        ),
        E::InvalidCertificate(_) => failure(
            Stage::Tls,
            Reason::TlsBadCertificate,
            at(describe_cert_error(err)),
            &["the vendor's certificate is malformed or revoked"],
        ),
        E::AlertReceived(A::ProtocolVersion) => protocol_version(at(
            "the server refused our TLS version (alert protocol_version)".into(),
        )),
        E::PeerIncompatible(
            P::ServerDoesNotSupportTls12Or13
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled
            | P::ServerTlsVersionIsDisabledByOurConfig,
        ) => protocol_version(at(format!("no TLS version in common ({err})"))),
        E::AlertReceived(
            a @ (A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::AccessDenied),
        ) => failure(
            Stage::Tls,
            Reason::TlsClientCertRefused,
            at(format!("the server sent alert {a:?}")),
            &[
                "the vendor requires a client certificate (spec.tls.clientCertSecretRef)",
                "the client certificate is not the one the vendor registered",
            ],
        ),
        E::AlertReceived(a) => failure(
            Stage::Tls,
            Reason::TlsPeerAlert,
            at(format!("the server sent alert {a:?}")),
            &[
                "no cipher suite or TLS version in common",
                "the vendor requires a client certificate or a different SNI name",
            ],
        ),
        E::InvalidMessage(_) => failure(
            Stage::Tls,
            Reason::TlsNotTls,
            at(format!("the server did not answer with TLS ({err})")),
            &["the port speaks plain SMPP: turn TLS off or use the TLS port"],
        ),
        other => failure(
            Stage::Tls,
            Reason::TlsHandshakeFailed,
            at(other.to_string()),
            &["TLS parameters do not match the vendor's"],
        ),
    }
}

fn protocol_version(message: String) -> BindFailure {
    failure(
        Stage::Tls,
        Reason::TlsProtocolVersion,
        message,
        &["the vendor and tls_min_version (spec.tls) have no TLS version in common"],
    )
}

fn describe_cert_error(e: &rustls::Error) -> String {
    e.to_string()
}

/// An I/O error while waiting for bind_resp. With TLS 1.3 the server checks our client
/// certificate after our side of the handshake is done, so its alert (certificate_required,
/// bad_certificate, …) surfaces here: it is named as the TLS failure it is. Anything else is
/// the peer closing the connection.
pub fn io_during_bind(
    e: &std::io::Error,
    tls: bool,
    kind: &str,
    version: &str,
    system_type: &str,
) -> BindFailure {
    let rustls_error = e.get_ref().is_some_and(|i| i.is::<rustls::Error>());
    if tls && rustls_error {
        return classify_tls("the vendor", e);
    }
    closed_before_bind_resp(tls, kind, version, system_type)
}

/// The peer closed the connection after connecting (and after TLS) without a bind_resp:
/// the famous "EOF". Vendors do this instead of answering when the bind is refused early.
pub fn closed_before_bind_resp(
    tls: bool,
    kind: &str,
    version: &str,
    system_type: &str,
) -> BindFailure {
    let after = if tls {
        "after the TLS handshake"
    } else {
        "after the TCP connect"
    };
    failure(
        Stage::Bind,
        Reason::ClosedBeforeBindResp,
        format!(
            "the vendor closed the connection {after}, before answering our {kind} bind (interface version {version}, system_type {system_type:?})"
        ),
        &[
            "our source IP is not allow-listed by the vendor",
            "this bind mode or interface version is not provisioned for the system_id (try `smpp-gateway probe`)",
            "too many binds for this system_id (lower maxBinds, or another system uses the same account)",
            "the vendor expects a different system_type",
        ],
    )
}

pub fn bind_timeout(secs: u64) -> BindFailure {
    failure(
        Stage::Bind,
        Reason::BindTimeout,
        format!("no bind_resp within {secs} s"),
        &[
            "the vendor silently drops binds it refuses (IP not allow-listed, bind limit)",
            "the port is a TLS port and TLS is off",
        ],
    )
}

pub fn bind_generic_nack(status: u32) -> BindFailure {
    failure(
        Stage::BindResp,
        Reason::BindGenericNack,
        format!(
            "the vendor answered the bind with generic_nack ({})",
            status_name(status)
        ),
        &[
            "the vendor does not support this bind mode or interface version (try `smpp-gateway probe`)",
        ],
    )
}

pub fn bind_unexpected(what: &str) -> BindFailure {
    failure(
        Stage::Bind,
        Reason::BindUnexpectedPdu,
        format!("the vendor sent {what} instead of bind_resp"),
        &["the vendor's SMPP implementation is non-standard"],
    )
}

pub fn protocol_error(stage: Stage, what: impl Into<String>) -> BindFailure {
    failure(
        stage,
        Reason::ProtocolError,
        what,
        &["the peer does not speak SMPP on this port (HTTP? TLS on a plain connection?)"],
    )
}

/// bind_resp with a non-zero command_status.
pub fn bind_rejected(status: u32) -> BindFailure {
    let name = status_name(status);
    let causes: &[&str] = match status {
        0x0E => &[
            "wrong password (check the Secret / password column)",
            "the password is longer than 8 characters and the vendor truncates it differently",
        ],
        0x0F => &[
            "wrong system_id",
            "the account is not enabled on this vendor endpoint",
        ],
        0x05 => &[
            "the vendor thinks this system_id is already bound: too many binds, or a stale session that the vendor has not timed out yet",
        ],
        0x0D => &[
            "the vendor refused the bind without detail: bind mode, interface version, system_type or source IP not provisioned",
            "bind limit reached",
        ],
        0x53 => &["the vendor expects a different system_type"],
        0x03 => &["this bind mode is not supported by the vendor"],
        0x58 => &["the vendor throttles binds: too many bind attempts"],
        0x08 => &["the vendor has an internal error; retry later or contact the vendor"],
        _ => &["see the vendor's documentation for this status"],
    };
    failure(
        Stage::BindResp,
        Reason::BindRejected(status),
        format!("the vendor refused the bind with {name} ({status:#010x})"),
        causes,
    )
}

pub fn enquire_link_timeout(secs: u64) -> BindFailure {
    failure(
        Stage::Session,
        Reason::EnquireLinkTimeout,
        format!("no enquire_link_resp within {secs} s"),
        &[
            "the vendor or the network path hangs",
            "a NAT or firewall dropped the idle connection",
        ],
    )
}

pub fn peer_unbound() -> BindFailure {
    failure(
        Stage::Session,
        Reason::PeerUnbound,
        "the vendor sent unbind",
        &["vendor maintenance or a session limit on the vendor side"],
    )
}

pub fn connection_lost(detail: &str) -> BindFailure {
    failure(
        Stage::Session,
        Reason::ConnectionLost,
        format!("the connection was lost while bound ({detail})"),
        &[
            "the vendor restarted or closed idle sessions",
            "network interruption",
        ],
    )
}

/// Name of an SMPP command_status, for messages.
pub fn status_name(status: u32) -> String {
    match esme_name(status) {
        Some(n) => n.to_string(),
        None => format!("status {status:#010x}"),
    }
}

/// The ESME_* name of a known command_status.
fn esme_name(status: u32) -> Option<&'static str> {
    Some(match status {
        0x00 => "ESME_ROK",
        0x01 => "ESME_RINVMSGLEN",
        0x02 => "ESME_RINVCMDLEN",
        0x03 => "ESME_RINVCMDID",
        0x04 => "ESME_RINVBNDSTS",
        0x05 => "ESME_RALYBND",
        0x08 => "ESME_RSYSERR",
        0x0A => "ESME_RINVSRCADR",
        0x0B => "ESME_RINVDSTADR",
        0x0D => "ESME_RBINDFAIL",
        0x0E => "ESME_RINVPASWD",
        0x0F => "ESME_RINVSYSID",
        0x14 => "ESME_RMSGQFUL",
        0x45 => "ESME_RSUBMITFAIL",
        0x53 => "ESME_RINVSYSTYP",
        0x58 => "ESME_RTHROTTLED",
        0xFF => "ESME_RUNKNOWNERR",
        _ => return None,
    })
}

// The one list of reason codes: the enum, its FIXED slice and as_str come from it, so a new
// variant is in FIXED and the docs test catches it if docs/troubleshooting.md lacks it.
macro_rules! reasons {
    ($($v:ident => $s:literal,)+) => {
        /// Why a bind failed or a session ended: a stable, lower-case code, the
        /// `smpp_bind_failures_total{reason}` label and the start of `last_error`.
        /// docs/troubleshooting.md documents each; a test keeps the two in step.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($v,)+
            /// bind_resp with this non-zero command_status: `bind_esme_rinvpaswd` for a
            /// known status, `bind_status_0x00000400` otherwise.
            BindRejected(u32),
        }

        impl Reason {
            /// Every reason but [`Reason::BindRejected`].
            pub const FIXED: &'static [Reason] = &[$(Reason::$v),+];

            /// The code.
            pub fn as_str(self) -> Cow<'static, str> {
                match self {
                    $(Reason::$v => Cow::Borrowed($s),)+
                    Reason::BindRejected(status) => Cow::Owned(match esme_name(status) {
                        Some(n) => format!("bind_{}", n.to_ascii_lowercase()),
                        None => format!("bind_status_{status:#010x}"),
                    }),
                }
            }
        }
    };
}

reasons! {
    ConfigInvalid => "config_invalid",
    DnsFailed => "dns_failed",
    DnsTimeout => "dns_timeout",
    TcpRefused => "tcp_refused",
    TcpTimeout => "tcp_timeout",
    TcpFailed => "tcp_failed",
    TlsTimeout => "tls_timeout",
    TlsPeerClosed => "tls_peer_closed",
    TlsFailed => "tls_failed",
    TlsUnknownCa => "tls_unknown_ca",
    TlsNameMismatch => "tls_name_mismatch",
    TlsCertExpired => "tls_cert_expired",
    TlsCertNotYetValid => "tls_cert_not_yet_valid",
    TlsBadCertificate => "tls_bad_certificate",
    TlsProtocolVersion => "tls_protocol_version",
    TlsClientCertRefused => "tls_client_cert_refused",
    TlsPeerAlert => "tls_peer_alert",
    TlsNotTls => "tls_not_tls",
    TlsHandshakeFailed => "tls_handshake_failed",
    ClosedBeforeBindResp => "closed_before_bind_resp",
    BindTimeout => "bind_timeout",
    BindGenericNack => "bind_generic_nack",
    BindUnexpectedPdu => "bind_unexpected_pdu",
    ProtocolError => "protocol_error",
    EnquireLinkTimeout => "enquire_link_timeout",
    PeerUnbound => "peer_unbound",
    ConnectionLost => "connection_lost",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn every_reason_is_documented() {
        let doc = include_str!("../../../docs/troubleshooting.md");
        for r in Reason::FIXED {
            assert!(
                doc.contains(&format!("`{r}`")),
                "docs/troubleshooting.md lacks {r}"
            );
        }
        for status in [0x0Eu32, 0x0F, 0x05, 0x0D, 0x53, 0x03, 0x58, 0x08] {
            let code = bind_rejected(status).reason;
            assert!(
                doc.contains(&format!("`{code}`")),
                "docs/troubleshooting.md lacks {code}"
            );
        }
        let produced = [
            config_error("x").reason,
            bind_timeout(1).reason,
            bind_generic_nack(3).reason,
            bind_unexpected("x").reason,
            protocol_error(Stage::Bind, "x").reason,
            enquire_link_timeout(1).reason,
            peer_unbound().reason,
            connection_lost("x").reason,
            closed_before_bind_resp(true, "a", "b", "c").reason,
        ];
        for r in produced {
            assert!(Reason::FIXED.contains(&r), "{r} missing from Reason::FIXED");
        }
    }

    #[test]
    fn reason_codes_are_unchanged() {
        let codes: Vec<String> = Reason::FIXED.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            codes,
            [
                "config_invalid",
                "dns_failed",
                "dns_timeout",
                "tcp_refused",
                "tcp_timeout",
                "tcp_failed",
                "tls_timeout",
                "tls_peer_closed",
                "tls_failed",
                "tls_unknown_ca",
                "tls_name_mismatch",
                "tls_cert_expired",
                "tls_cert_not_yet_valid",
                "tls_bad_certificate",
                "tls_protocol_version",
                "tls_client_cert_refused",
                "tls_peer_alert",
                "tls_not_tls",
                "tls_handshake_failed",
                "closed_before_bind_resp",
                "bind_timeout",
                "bind_generic_nack",
                "bind_unexpected_pdu",
                "protocol_error",
                "enquire_link_timeout",
                "peer_unbound",
                "connection_lost",
            ]
        );
        assert_eq!(
            serde_json::to_value(bind_rejected(0x0E)).unwrap()["reason"],
            "bind_esme_rinvpaswd"
        );
        assert_eq!(
            Reason::BindRejected(0x0400).to_string(),
            "bind_status_0x00000400"
        );
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:2776".parse().unwrap()
    }

    fn tls_err(e: rustls::Error) -> ConnectError {
        ConnectError::Tls {
            addr: addr(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }
    }

    #[test]
    fn tls_errors_are_named() {
        let cases = [
            (
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                "tls_unknown_ca",
            ),
            (
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
                "tls_name_mismatch",
            ),
            (
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
                "tls_cert_expired",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion),
                "tls_protocol_version",
            ),
            (
                rustls::Error::PeerIncompatible(
                    rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13,
                ),
                "tls_protocol_version",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
                "tls_peer_alert",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
                "tls_client_cert_refused",
            ),
            (
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                "tls_not_tls",
            ),
        ];
        for (e, code) in cases {
            let f = classify_connect(&tls_err(e));
            assert_eq!(f.stage, Stage::Tls);
            assert_eq!(f.reason, code);
            assert!(!f.likely_causes.is_empty());
        }
    }

    #[test]
    fn eof_in_handshake_is_explained_not_eof() {
        let e = ConnectError::Tls {
            addr: addr(),
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof"),
        };
        let f = classify_connect(&e);
        assert_eq!(f.reason, "tls_peer_closed");
        assert!(f.to_string().contains("allow-listed"));
    }

    #[test]
    fn tcp_and_dns() {
        assert_eq!(
            classify_connect(&ConnectError::TcpRefused { addr: addr() }).reason,
            "tcp_refused"
        );
        assert_eq!(
            classify_connect(&ConnectError::TcpTimeout { addr: addr() }).stage,
            Stage::Tcp
        );
        let dns = ConnectError::Dns {
            host: "x.invalid".into(),
            source: std::io::Error::other("nx"),
        };
        assert_eq!(classify_connect(&dns).stage, Stage::Dns);
    }

    #[test]
    fn bind_statuses_are_named() {
        for (status, code) in [
            (0x0E, "bind_esme_rinvpaswd"),
            (0x0F, "bind_esme_rinvsysid"),
            (0x05, "bind_esme_ralybnd"),
            (0x0D, "bind_esme_rbindfail"),
            (0x53, "bind_esme_rinvsystyp"),
            (0x0400, "bind_status_0x00000400"),
        ] {
            let f = bind_rejected(status);
            assert_eq!(f.reason, code);
            assert_eq!(f.stage, Stage::BindResp);
        }
        assert!(bind_rejected(0x0E).to_string().contains("ESME_RINVPASWD"));
    }

    #[test]
    fn tls_alert_after_handshake_is_named() {
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        assert_eq!(
            io_during_bind(&alert, true, "transceiver", "3.4", "").reason,
            "tls_client_cert_refused"
        );
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(
            io_during_bind(&reset, true, "transceiver", "3.4", "").reason,
            "closed_before_bind_resp"
        );
    }

    #[test]
    fn closed_before_bind_resp_gives_hints() {
        let f = closed_before_bind_resp(true, "transceiver", "3.4", "");
        assert_eq!(f.reason, "closed_before_bind_resp");
        let s = f.to_string();
        assert!(s.contains("after the TLS handshake"));
        for hint in [
            "allow-listed",
            "interface version",
            "too many binds",
            "system_type",
        ] {
            assert!(s.contains(hint), "missing {hint} in {s}");
        }
        assert!(!s.to_lowercase().contains("eof"));
    }
}
