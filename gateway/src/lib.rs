//! SMPP gateway: binds to upstream vendors as an ESME, driven by PostgreSQL rows, with a
//! fleet-wide bind budget, hot reload and bind failures explained.
//!
//! Dependencies point one way: `api` → `messaging` → `fleet` → `smpp`. `metrics` is shared.

pub mod api;
pub mod fleet;
pub mod messaging;
pub mod metrics;
pub mod smpp;
