//! The customer-facing SMPP server: customers (ESMEs) bind to us as to any SMSC and submit
//! through the same messaging core as the HTTP API.

pub mod auth;
pub mod bound;
pub mod limits;
pub mod requests;
pub mod slots;
pub mod status;
pub mod tls;
