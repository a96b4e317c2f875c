//! The front doors: the HTTP API (and later the SMPP server).

pub mod auth;
pub mod forward;
pub mod http;
pub mod messages;
