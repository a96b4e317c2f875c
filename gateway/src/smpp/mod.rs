//! SMPP as an ESME: PDUs, the connection (TCP, TLS), the bind and the session, traces,
//! the probe and the classification of every failure.

pub mod codec;
pub mod connection;
pub mod diagnostics;
pub mod dial;
pub mod endpoint;
pub mod pdu;
pub mod probe;
pub mod session;
pub mod tls;
pub mod trace;
