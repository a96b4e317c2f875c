//! The front doors: the HTTP API (and later the SMPP server).

pub mod http;
