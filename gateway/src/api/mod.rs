//! The front doors: the HTTP API and the SMPP server.

pub mod auth;
pub mod forward;
pub mod http;
pub mod messages;
pub mod smpp;
