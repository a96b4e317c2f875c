//! SMPP gateway: binds to upstream vendors as an ESME, driven by PostgreSQL rows, with a
//! fleet-wide bind budget, hot reload and bind failures explained.

pub mod backoff;
pub mod budget;
pub mod config;
pub mod connection;
pub mod diagnostics;
pub mod dial;
pub mod http;
pub mod manager;
pub mod metrics;
pub mod pdu;
pub mod probe;
pub mod reload;
pub mod reporter;
pub mod session;
pub mod state;
pub mod tls;
pub mod trace;
pub mod watcher;
