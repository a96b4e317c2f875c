//! SMPP gateway: binds to upstream vendors as an ESME, driven by PostgreSQL rows, with a
//! fleet-wide bind budget, hot reload and bind failures explained.

pub mod backoff;
pub mod config;
pub mod connection;
pub mod diagnostics;
pub mod pdu;
pub mod reload;
pub mod session;
pub mod tls;
pub mod trace;
