//! The fleet: vendor configuration from PostgreSQL, hot reload, the fleet-wide bind budget,
//! and the supervisors and workers that hold this pod's binds.

pub mod account_watcher;
pub mod accounts;
pub mod backoff;
pub mod budget;
pub mod claims;
pub mod config;
pub mod dial_gate;
pub mod manager;
pub mod peers;
pub mod reload;
pub mod reporter;
pub mod sessions;
pub mod state;
pub mod watcher;
